//! The data-parallel plan of the training loop (as torchtitan keeps parallelism beside its loop,
//! not in the model): every rank holds the whole model, reads its own slice of each global batch,
//! and the ranks meet once per optimizer step, after the last micro-batch's backward:
//!
//! 1. one small all-reduce of the step's statistics (losses, expert loads summed over micro-batches
//!    and ranks for the bias update, and which parameters got a gradient anywhere), so every rank
//!    takes the same decisions (non-finite loss, bias update, which parameters the step updates);
//! 2. the gradients, summed in buckets of `bucket_mb` (each rank's loss is pre-divided by the
//!    world size, so the sum is the mean), each bucket's all-reduce started during the last
//!    micro-batch's backward as soon as its gradients are complete (`grad_overlap`).
//!
//! The optimizer then takes the same step from the same gradients on every rank, so the weights
//! stay identical without being sent again.
//!
//! With expert parallelism (`[distributed] expert_parallel = E`, see `expert_parallel`) each rank
//! holds only its EP group share of the routed experts: their gradients already hold every token
//! of the EP group (the all-to-all's backward brought them) and are summed only over the ranks
//! that hold the same experts, and the gradient norm adds each expert once.
//!
//! With ZeRO-1 (`[distributed] zero = 1`, as DeepSeek-V2 trained) the optimizer state is sharded
//! instead (that of routed experts is already divided by expert parallelism and stays whole on
//! their holders): the shared parameters, flattened in name order and padded to a multiple of the world size,
//! are cut into one contiguous shard per rank. Step 2 becomes a reduce-scatter (each rank receives
//! the summed gradient of its shard), each rank updates its shard with its share of the moments,
//! and an all-gather hands every rank the whole updated model. Checkpoints gather the moments
//! back into whole parameters, so any world size, with or without ZeRO, resumes them.
//!
//! Gloo (CPU ranks) has no reduce-scatter of its own: torch's ProcessGroupGloo runs one as an
//! all-reduce of a copy of the whole input and keeps its chunk, and it could only start after the
//! backward. On Gloo, ZeRO-1 therefore sums the gradients by default with the same overlapped,
//! bucketed all-reduce as ZeRO-0 (the same bytes, sent while the backward runs, no flat copy) and
//! each rank reads its shard from the summed gradients; the optimizer state is sharded all the
//! same (`[distributed] reduce_scatter` chooses either way on any backend).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::dist::{Backend, ProcessGroup, ReduceOp, Work};
use crate::expert_parallel::{gather_experts, split_expert_name, ExpertGroup, ExpertLayout};
use crate::grad_overlap::{zero_missing_grads, OverlappedReduce};
use crate::optim::{release_grads, AdamW, OptimConfig, Slot};

/// How ranks share the work, from the `[distributed]` table of the train config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedConfig {
    /// ZeRO stage: 0 (every rank holds the whole optimizer state) or 1 (sharded across ranks).
    #[serde(default)]
    pub zero: u8,
    /// Ranks per expert-parallel group: each holds 1/E of every MoE layer's routed experts (1:
    /// every rank holds all). Must divide the number of ranks and of routed experts; a single
    /// process ignores it (it holds every expert, so it can resume an EP run's checkpoint).
    #[serde(default = "one")]
    pub expert_parallel: usize,
    /// MiB of gradients per all-reduce bucket (each starts during the backward once complete).
    #[serde(default = "bucket_mb")]
    pub bucket_mb: f64,
    /// With ZeRO-1, how the gradients are summed (DeepSpeed's `reduce_scatter` switch): `true` by
    /// a reduce-scatter after the backward (each rank receives only its shard's sum: half an
    /// all-reduce's bytes), `false` by the bucketed all-reduce that overlaps the backward. Unset:
    /// reduce-scatter on NCCL, all-reduce on Gloo, whose reduce-scatter is an all-reduce anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce_scatter: Option<bool>,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self {
            zero: 0,
            expert_parallel: 1,
            bucket_mb: bucket_mb(),
            reduce_scatter: None,
        }
    }
}

fn one() -> usize {
    1
}

/// Gradient MiB per all-reduce by default: large enough to amortize each collective's latency,
/// small enough that the first buckets start early in the backward (DDP's `bucket_cap_mb` is 25).
fn bucket_mb() -> f64 {
    25.0
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
    pub group: Arc<ProcessGroup>,
    /// Trainable parameters held by every rank, in name order.
    params: Vec<Tensor>,
    names: Vec<String>,
    zero: Option<Zero1>,
    /// With ZeRO-1 on CPU: this rank's shard and the whole flat model, the all-gather's buffers,
    /// kept from step to step (fresh ones of the model's size cost page faults every step, where
    /// CUDA's caching allocator reuses its blocks).
    gather: Option<(Tensor, Tensor)>,
    /// With expert parallelism: this rank's routed experts and their groups.
    experts: Option<Experts>,
    /// The bucketed all-reduce of `params`' gradients that overlaps the backward: without ZeRO-1,
    /// and with it unless it reduce-scatters (see the module's notes).
    overlap: Option<OverlappedReduce>,
}

/// The routed experts of one rank of an expert-parallel job.
struct Experts {
    group: Arc<ExpertGroup>,
    /// The ranks that hold the same experts (None: only this one).
    replicas: Option<Arc<ProcessGroup>>,
    /// This rank's trainable expert parameters and their names, in name order.
    params: Vec<Tensor>,
    names: Vec<String>,
    /// With replicas: the overlapped all-reduce of `params` over them.
    overlap: Option<OverlappedReduce>,
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

/// The concatenation of the flat FP32 `parts` (on `device`), zero-padded to `len` elements.
fn padded(mut parts: Vec<Tensor>, len: i64, device: Device) -> Tensor {
    let total = parts.iter().map(Tensor::numel).sum::<usize>() as i64;
    if len > total {
        parts.push(Tensor::zeros([len - total], (Kind::Float, device)));
    }
    Tensor::cat(&parts, 0)
}

impl DataParallel {
    /// Makes every rank start from rank 0's variables (weights and balancing biases, fresh or
    /// restored; routed experts from the first rank holding the same ones), then plans over the
    /// trainable ones. With `layout.ep > 1` it also forms this rank's EP group and replica group
    /// (every rank calls this at once).
    pub fn new(
        group: ProcessGroup,
        vs: &nn::VarStore,
        cfg: &DistributedConfig,
        layout: ExpertLayout,
        n_experts: i64,
    ) -> Result<Self> {
        if cfg.zero > 1 {
            bail!(
                "[distributed] zero = {} in the train config: only 0 and 1 exist",
                cfg.zero
            );
        }
        ensure!(
            cfg.bucket_mb > 0.0,
            "[distributed] bucket_mb must be positive"
        );
        let bucket_bytes = (cfg.bucket_mb * (1u64 << 20) as f64) as usize;
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let (expert_vars, named): (Vec<_>, Vec<_>) = named
            .into_iter()
            .partition(|(name, _)| layout.ep > 1 && split_expert_name(name).is_some());
        let trainable: Vec<(String, Tensor)> = expert_vars
            .iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        let experts = if layout.ep > 1 {
            let ep_group = group.subgroup(
                &format!("ep{}", layout.rank / layout.ep),
                &layout.ep_members(),
            )?;
            let replicas = (layout.world > layout.ep)
                .then(|| {
                    group.subgroup(
                        &format!("experts{}", layout.ep_rank()),
                        &layout.replica_members(),
                    )
                })
                .transpose()?
                .map(Arc::new);
            let (names, params): (Vec<String>, Vec<Tensor>) = trainable.into_iter().unzip();
            let overlap = replicas
                .as_ref()
                .map(|r| {
                    let order = backward_order(vs, &params);
                    OverlappedReduce::new(r.clone(), &params, &order, bucket_bytes)
                })
                .transpose()?;
            Some(Experts {
                group: Arc::new(ExpertGroup::new(ep_group, layout.shard(n_experts))),
                replicas,
                names,
                params,
                overlap,
            })
        } else {
            None
        };
        tch::no_grad(|| -> Result<()> {
            let mut works = named
                .iter()
                .map(|(_, t)| group.broadcast(t, 0))
                .collect::<Result<Vec<Work>>>()?;
            if let Some(replicas) = experts.as_ref().and_then(|e| e.replicas.as_ref()) {
                for (_, t) in &expert_vars {
                    works.push(replicas.broadcast(t, 0)?);
                }
            }
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
        ensure!(
            zero.is_some() || cfg.reduce_scatter.is_none(),
            "[distributed] reduce_scatter chooses how ZeRO-1 sums gradients: set zero = 1 or \
             remove it"
        );
        let reduce_scatter = cfg
            .reduce_scatter
            .unwrap_or(group.backend() == Backend::Nccl);
        let device = params[0].device();
        let gather = zero.as_ref().filter(|_| device == Device::Cpu).map(|z| {
            let world = group.world_size as i64;
            let zeros = |n| Tensor::zeros([n], (Kind::Float, device));
            (zeros(z.shard), zeros(z.shard * world))
        });
        let group = Arc::new(group);
        let overlap = (zero.is_none() || !reduce_scatter)
            .then(|| {
                OverlappedReduce::new(
                    group.clone(),
                    &params,
                    &backward_order(vs, &params),
                    bucket_bytes,
                )
            })
            .transpose()?;
        Ok(Self {
            group,
            params,
            names,
            zero,
            gather,
            experts,
            overlap,
        })
    }

    /// The EP group the model's MoE layers exchange token copies in, with expert parallelism.
    pub fn expert_group(&self) -> Option<&Arc<ExpertGroup>> {
        self.experts.as_ref().map(|e| &e.group)
    }

    /// Bytes this rank has sent in all its groups (see `ProcessGroup::sent_bytes`).
    pub fn sent_bytes(&self) -> u64 {
        let experts = self.experts.as_ref().map_or(0, |e| {
            e.group.group().sent_bytes() + e.replicas.as_ref().map_or(0, |r| r.sent_bytes())
        });
        self.group.sent_bytes() + experts
    }

    /// With expert parallelism, `named` (weights or moments, this rank's experts under their own
    /// numbers) with the EP group's other experts gathered in, for a whole-model checkpoint
    /// (every rank calls this); otherwise `named` unchanged.
    pub fn whole_experts(&self, named: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
        let Some(experts) = &self.experts else {
            return Ok(named);
        };
        let (local, mut out): (Vec<_>, Vec<_>) = named
            .into_iter()
            .partition(|(name, _)| split_expert_name(name).is_some());
        out.extend(gather_experts(&experts.group, &local)?);
        Ok(out)
    }

    /// With ZeRO-1, the optimizer this rank steps instead of `full`: one over the pieces of its
    /// shard, its moments taken from `full` (fresh or restored from a checkpoint).
    pub fn shard_optimizer(&self, full: &AdamW, cfg: &OptimConfig) -> Result<Option<AdamW>> {
        let Some(zero) = &self.zero else {
            return Ok(None);
        };
        let mut slots: Vec<Slot> = tch::no_grad(|| {
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
        // This rank's experts are its alone already: their state stays whole.
        if let Some(experts) = &self.experts {
            slots.extend(
                experts
                    .names
                    .iter()
                    .zip(&experts.params)
                    .map(|(name, p)| Slot {
                        name: name.clone(),
                        tensor: p.shallow_clone(),
                        decay: p.dim() >= 2,
                        offset: None,
                    }),
            );
        }
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
        if let Some(experts) = &self.experts {
            for name in &experts.names {
                for suffix in ["exp_avg", "exp_avg_sq"] {
                    let key = format!("{name}.{suffix}");
                    out.push((key.clone(), mine[&key].to_kind(kind)));
                }
            }
        }
        Ok(out)
    }

    /// With expert parallelism: sums the expert gradients flagged in `anywhere` over the ranks
    /// holding the same experts, and returns the sum of their squares over the EP group (each
    /// expert counted once, for the global norm). 0 without experts.
    fn reduce_expert_gradients(&self, anywhere: &[bool]) -> Result<f64> {
        let Some(experts) = &self.experts else {
            return Ok(0.0);
        };
        if let Some(overlap) = &experts.overlap {
            overlap.wait()?;
            release_unreached(&experts.params, anywhere);
        }
        let defined: Vec<Tensor> = experts
            .params
            .iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .collect();
        let device = experts.params[0].device();
        let squares = Tensor::from_slice(&[AdamW::grad_norm(&defined).powi(2)]).to_device(device);
        experts
            .group
            .group()
            .all_reduce(&squares, ReduceOp::Sum)?
            .wait()?;
        Ok(squares.double_value(&[0]))
    }

    pub fn world_size(&self) -> u64 {
        self.group.world_size as u64
    }

    /// Whether this rank writes metrics, logs and checkpoints.
    pub fn is_leader(&self) -> bool {
        self.group.rank == 0
    }

    /// Call before the last micro-batch's backward: its completed gradients start their
    /// all-reduce while it runs.
    pub fn before_last_backward(&self) -> Result<()> {
        let experts = self.experts.as_ref().and_then(|e| e.overlap.as_ref());
        self.overlap
            .iter()
            .chain(experts)
            .try_for_each(OverlappedReduce::arm)
    }

    /// Call after the last backward: which parameters (shared ones, then this rank's experts) got
    /// a gradient on this rank (the buckets not yet started start now, missing gradients as
    /// zeros).
    pub fn after_last_backward(&self) -> Result<Vec<bool>> {
        let reached = |overlap: Option<&OverlappedReduce>, params: &[Tensor]| match overlap {
            Some(overlap) => overlap.finish_backward(),
            None => Ok(params.iter().map(|p| p.grad().defined()).collect()),
        };
        let mut local = reached(self.overlap.as_ref(), &self.params)?;
        if let Some(experts) = &self.experts {
            local.extend(reached(experts.overlap.as_ref(), &experts.params)?);
        }
        Ok(local)
    }

    /// Gradient buckets whose all-reduce started during this step's backward.
    pub fn overlapped_buckets(&self) -> Option<u64> {
        self.overlap.as_ref().map(|o| o.overlapped() as u64)
    }

    /// Combines the step's statistics over ranks and readies the gradients for `step`: returns
    /// which parameters (those held by every rank, then this rank's experts) got a gradient on
    /// some rank holding them, after giving those without one here a zero gradient. `local`
    /// says which got one here (`after_last_backward`).
    pub fn reduce_stats(&self, stats: &mut StepStats, local: &[bool]) -> Result<Vec<bool>> {
        let n_means = stats.means.len();
        let (shared, own) = local.split_at(self.params.len());
        let flags: Vec<f64> = shared.iter().map(|&l| l as u8 as f64).collect();
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
        let mut anywhere = anywhere;
        let mut all_params: Vec<&Tensor> = self.params.iter().collect();
        if let Some(experts) = &self.experts {
            let flags: Vec<f64> = own.iter().map(|&l| l as u8 as f64).collect();
            let flags = Tensor::from_slice(&flags).to_device(device);
            if let Some(replicas) = &experts.replicas {
                replicas.all_reduce(&flags, ReduceOp::Sum)?.wait()?;
            }
            anywhere.extend(Vec::<f64>::try_from(&flags)?.iter().map(|&n| n > 0.0));
            all_params.extend(&experts.params);
        }
        let reached: Vec<&Tensor> = all_params
            .into_iter()
            .zip(&anywhere)
            .filter(|(_, &any)| any)
            .map(|(p, _)| p)
            .collect();
        zero_missing_grads(&reached)?;
        Ok(anywhere)
    }

    /// The optimizer step: all-reduced gradients and `optimizer.step`, or with ZeRO-1 the
    /// reduce-scatter, this rank's shard update and the all-gather of the parameters. Only
    /// parameters flagged in `anywhere` (see `reduce_stats`) are updated. Returns the global
    /// gradient norm before clipping.
    pub fn step(&self, optimizer: &mut AdamW, lr: f64, anywhere: &[bool]) -> Result<f64> {
        let (shared, own) = anywhere.split_at(self.params.len());
        let Some(zero) = &self.zero else {
            self.overlap
                .as_ref()
                .expect("without ZeRO-1 the gradients go through the overlapped all-reduce")
                .wait()?;
            release_unreached(&self.params, shared);
            if self.experts.is_none() {
                return Ok(optimizer.step(lr));
            }
            let expert_squares = self.reduce_expert_gradients(own)?;
            let defined: Vec<Tensor> = self
                .params
                .iter()
                .map(Tensor::grad)
                .filter(Tensor::defined)
                .collect();
            let norm = (AdamW::grad_norm(&defined).powi(2) + expert_squares).sqrt();
            optimizer.update(lr, &optimizer.grads(), norm);
            optimizer.zero_grad();
            return Ok(norm);
        };
        let expert_squares = self.reduce_expert_gradients(own)?;
        tch::no_grad(|| {
            let world = self.world_size() as i64;
            let device = self.params[0].device();
            // The summed gradient of this rank's shard, piece by piece.
            let pieces: Vec<Tensor> = match &self.overlap {
                // Summed by the all-reduce: every rank has the whole sum; its shard is a view of it.
                Some(overlap) => {
                    overlap.wait()?;
                    zero.pieces
                        .iter()
                        .map(|&(i, start, _, len)| {
                            self.params[i].grad().view([-1]).narrow(0, start, len)
                        })
                        .collect()
                }
                None => {
                    let grads: Vec<Tensor> = self
                        .params
                        .iter()
                        .zip(shared)
                        .map(|(p, &any)| match any {
                            true => p.grad().view([-1]),
                            false => p.zeros_like().view([-1]),
                        })
                        .collect();
                    let flat = padded(grads, zero.shard * world, device);
                    let shard = flat.new_zeros([zero.shard], (flat.kind(), device));
                    self.group.reduce_scatter(&shard, &flat)?.wait()?;
                    zero.pieces
                        .iter()
                        .map(|&(_, _, at, len)| shard.narrow(0, at, len))
                        .collect()
                }
            };
            release_grads(&self.params);
            // The optimizer's slots: this rank's pieces of the shared parameters, then its experts.
            let mut grads: BTreeMap<&str, Tensor> = zero
                .pieces
                .iter()
                .zip(pieces)
                .filter(|(&(i, ..), _)| shared[i])
                .map(|(&(i, ..), g)| (self.names[i].as_str(), g))
                .collect();
            let squares: f64 = grads
                .values()
                .map(|g| g.norm().double_value(&[]).powi(2))
                .sum();
            let squares = Tensor::from_slice(&[squares]).to_device(device);
            self.group.all_reduce(&squares, ReduceOp::Sum)?.wait()?;
            let norm = (squares.double_value(&[0]) + expert_squares).sqrt();
            if let Some(experts) = &self.experts {
                for (name, p) in experts.names.iter().zip(&experts.params) {
                    grads.insert(name, p.grad());
                }
            }
            let grads: Vec<Tensor> = optimizer
                .names()
                .map(|n| grads.remove(n).unwrap_or_default())
                .collect();
            optimizer.update(lr, &grads, norm);
            if let Some(experts) = &self.experts {
                release_grads(&experts.params);
            }
            // This rank's updated shard, in one buffer: the pieces (and the last shard's padding).
            let updated = zero
                .pieces
                .iter()
                .map(|&(i, start, _, len)| self.params[i].view([-1]).narrow(0, start, len));
            let (mine, full) = match &self.gather {
                Some((mine, full)) => (mine.shallow_clone(), full.shallow_clone()),
                None => (
                    Tensor::zeros([zero.shard], (Kind::Float, device)),
                    Tensor::empty([zero.shard * world], (Kind::Float, device)),
                ),
            };
            for (&(.., at, len), piece) in zero.pieces.iter().zip(updated) {
                mine.narrow(0, at, len).copy_(&piece);
            }
            self.group.all_gather(&full, &mine)?.wait()?;
            let mut offset = 0;
            for p in &self.params {
                let n = p.numel() as i64;
                p.view([-1]).copy_(&full.narrow(0, offset, n));
                offset += n;
            }
            Ok(norm)
        })
    }
}

/// Drops the (zero) gradients of the `params` no rank `reached`, so the optimizer leaves them as
/// they are, as when training alone.
fn release_unreached(params: &[Tensor], reached: &[bool]) {
    let unreached: Vec<Tensor> = params
        .iter()
        .zip(reached)
        .filter(|(_, &any)| !any)
        .map(|(p, _)| p.shallow_clone())
        .collect();
    release_grads(&unreached);
}

/// Indices of `params` in the reverse of the order `vs` created them: the backward finishes the
/// last-used parameters first (the model creates its layers in forward order).
fn backward_order(vs: &nn::VarStore, params: &[Tensor]) -> Vec<usize> {
    let created: std::collections::HashMap<usize, usize> = vs
        .trainable_variables()
        .iter()
        .enumerate()
        .map(|(at, t)| (t.data_ptr() as usize, at))
        .collect();
    let mut order: Vec<usize> = (0..params.len()).collect();
    order.sort_by_key(|&i| {
        std::cmp::Reverse(created.get(&(params[i].data_ptr() as usize)).copied())
    });
    order
}

#[cfg(test)]
mod tests {
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
}
