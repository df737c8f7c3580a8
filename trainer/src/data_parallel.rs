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
//! their holders): every gradient bucket of the shared parameters is padded to a multiple of the
//! world size and cut into one equal part per rank, a rank's shard being its parts (see
//! `ShardPlan`). Step 2 becomes a reduce-scatter of each bucket, started during the backward as
//! the all-reduce is (each rank receives the summed gradient of its parts), each rank updates its
//! shard with its share of the moments, and an all-gather hands every rank the whole updated
//! model, in rounds of at most `bucket_mb`, so its buffers stay small beside the model. Checkpoints
//! gather the moments back into whole parameters, round by round into the leader's host memory,
//! so any world size, with or without ZeRO, resumes them.
//!
//! Gloo (CPU ranks) has no reduce-scatter of its own: torch's ProcessGroupGloo runs one as an
//! all-reduce of a copy of its input and keeps its part. On Gloo, ZeRO-1 therefore sums the
//! gradients by default with the all-reduce itself (the same bytes, without the copy) and each rank
//! reads its shard from the summed gradients; the optimizer state is sharded all the same
//! (`[distributed] reduce_scatter` chooses either way on any backend).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::dist::{Backend, ProcessGroup, ReduceOp, Work};
use crate::expert_parallel::{gather_experts, split_expert_name, ExpertGroup, ExpertLayout};
use crate::grad_overlap::{plan_buckets, zero_missing_grads, OverlappedReduce, Reduction};
use crate::host_memory::upload;
use crate::optim::{release_grads, AdamW, MomentStore, OptimConfig, Slot};

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
    /// MiB of gradients per bucket (each bucket's sum starts during the backward once complete);
    /// with ZeRO-1 also the most MiB each round of its all-gathers moves.
    #[serde(default = "bucket_mb")]
    pub bucket_mb: f64,
    /// With ZeRO-1, how each gradient bucket is summed during the backward (DeepSpeed's
    /// `reduce_scatter` switch): `true` by a reduce-scatter (each rank receives only its shard's
    /// sums: half an all-reduce's bytes), `false` by an all-reduce. Unset: reduce-scatter on NCCL,
    /// all-reduce on Gloo, whose reduce-scatter is an all-reduce of a copy anyway.
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

/// √(Σ‖g‖² of the shared parameters + that of the experts), read from the device at once.
fn global_norm(squares: &Tensor, expert_squares: Option<&Tensor>) -> f64 {
    let total = match expert_squares {
        Some(experts) => squares + experts,
        None => squares.shallow_clone(),
    };
    total.double_value(&[]).sqrt()
}

/// A step's numbers that every rank must agree on, before and after the all-reduce. They stay
/// on the device through the micro-batches and the all-reduce: reading them would stall the GPU
/// each time, so the trainer reads them once, after the last backward (and the all-reduce).
pub struct StepStats {
    /// Loss terms (Double, one dimension), each the mean over this rank's micro-batches (after:
    /// over all ranks).
    pub means: Tensor,
    /// Tokens routed to each expert, per MoE layer, summed over micro-batches (after: and ranks).
    pub loads: Vec<Tensor>,
    /// Token-to-expert assignments each MoE layer dropped for capacity (Int64, one per layer;
    /// empty without a capacity factor), summed like the loads.
    pub dropped: Tensor,
}

impl StepStats {
    /// The two summed term by term (a step's micro-batches).
    pub fn plus(self, other: StepStats) -> StepStats {
        StepStats {
            means: self.means + other.means,
            loads: self
                .loads
                .iter()
                .zip(&other.loads)
                .map(|(a, b)| a + b)
                .collect(),
            dropped: self.dropped + other.dropped,
        }
    }
}

/// One rank of a data-parallel job.
pub struct DataParallel {
    pub group: Arc<ProcessGroup>,
    /// Trainable parameters held by every rank, in name order.
    params: Vec<Tensor>,
    names: Vec<String>,
    zero: Option<Zero1>,
    /// With expert parallelism: this rank's routed experts and their groups.
    experts: Option<Experts>,
    /// The bucketed sums of `params`' gradients that overlap the backward: all-reduces, or with
    /// ZeRO-1 reduce-scatters into the shard (see the module's notes).
    overlap: OverlappedReduce,
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

/// A piece of one parameter inside a flat range: (parameter index, start in the parameter, start
/// in the range's buffer, length).
type Piece = (usize, i64, i64, i64);

/// The pieces of the parameters of `numels` (flattened in order) that fall in `lo..hi` of the flat
/// vector, placed from `base` on in a buffer that holds the range.
fn pieces_in(numels: &[i64], lo: i64, hi: i64, base: i64) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut offset = 0;
    for (i, &n) in numels.iter().enumerate() {
        let (a, b) = (offset.max(lo), (offset + n).min(hi));
        if a < b {
            pieces.push((i, a - offset, base + a - lo, b - a));
        }
        offset += n;
    }
    pieces
}

/// The ZeRO-1 layout and how its collectives walk it: the gradient buckets (whole parameters in
/// backward order, as the overlapped reduction sums them) are each padded to a multiple of the world
/// size and cut into one equal part per rank, as DeepSpeed's and Megatron's distributed optimizers
/// do, so a bucket's reduce-scatter can start during the backward as soon as its gradients are
/// complete. A rank's shard is its parts of every bucket, end to end. The all-gather of the updated
/// parameters moves it in rounds of at most a bucket over all ranks (a bucket holding one large
/// parameter takes several), so its buffers stay at a bucket's size instead of a flat copy of the
/// whole model, which a large model has no room for beside its weights and gradients.
struct ShardPlan {
    /// Ranks sharing the parameters.
    world: i64,
    /// Elements of each rank's shard.
    shard: i64,
    /// This rank's part of each bucket: (start in the shard, elements).
    parts: Vec<(i64, i64)>,
    /// The pieces of parameters inside this rank's shard, placed in the shard (one per parameter at
    /// most: a part is a contiguous range of its bucket).
    pieces: Vec<Piece>,
    /// The all-gather's rounds.
    rounds: Vec<Round>,
}

/// One round of the all-gather: `len` elements of every rank's shard, from `at` on.
#[derive(Debug, PartialEq)]
struct Round {
    at: i64,
    len: i64,
    /// The pieces of parameters in every rank's part of the round, placed in the round's buffer
    /// (rank r's part at r × `len`).
    pieces: Vec<Piece>,
}

impl ShardPlan {
    /// Cuts each of `buckets` (indices into `numels`) into `world` equal parts, keeps `rank`'s
    /// pieces and plans all-gather rounds of at most `bucket` elements over all ranks (a bucket
    /// that holds at most `bucket` elements takes one round).
    fn new(buckets: &[Vec<usize>], numels: &[i64], rank: usize, world: usize, bucket: i64) -> Self {
        let (rank, world) = (rank as i64, world as i64);
        let chunk = ((bucket + world - 1) / world).max(1);
        let mut plan = Self {
            world,
            shard: 0,
            parts: Vec::new(),
            pieces: Vec::new(),
            rounds: Vec::new(),
        };
        for params in buckets {
            let sizes: Vec<i64> = params.iter().map(|&i| numels[i]).collect();
            let global = |pieces: Vec<Piece>| -> Vec<Piece> {
                pieces
                    .into_iter()
                    .map(|(k, start, at, n)| (params[k], start, at, n))
                    .collect()
            };
            let len = (sizes.iter().sum::<i64>() + world - 1) / world;
            let base = plan.shard;
            plan.pieces.extend(global(pieces_in(
                &sizes,
                rank * len,
                (rank + 1) * len,
                base,
            )));
            for from in (0..len).step_by(chunk as usize) {
                let n = chunk.min(len - from);
                let pieces = (0..world)
                    .flat_map(|r| pieces_in(&sizes, r * len + from, r * len + from + n, r * n))
                    .collect();
                plan.rounds.push(Round {
                    at: base + from,
                    len: n,
                    pieces: global(pieces),
                });
            }
            plan.parts.push((base, len));
            plan.shard += len;
        }
        plan
    }
}

/// This rank's ZeRO-1 layout and the buffers its collectives reuse from step to step.
struct Zero1 {
    plan: ShardPlan,
    /// This rank's shard: the reduce-scatter's summed gradients, then the updated parameters the
    /// all-gather sends.
    shard: Tensor,
    /// Whether the gradients are reduce-scattered into `shard` (otherwise all-reduced, and this
    /// rank's pieces read from the summed gradients).
    scattered: bool,
    /// Two round buffers (every rank's part of a round): one is filled or emptied while the
    /// other's collective runs.
    rounds: [Tensor; 2],
}

impl Zero1 {
    /// Round `k`'s two sides: its buffer (every rank's part, in rank order) and this rank's part
    /// of `shard`.
    fn round(&self, k: usize) -> (Tensor, Tensor) {
        let Round { at, len, .. } = self.plan.rounds[k];
        (
            self.rounds[k % 2].narrow(0, 0, self.plan.world * len),
            self.shard.narrow(0, at, len),
        )
    }
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
                    let buckets = plan_buckets(&params, &backward_order(vs, &params), bucket_bytes);
                    OverlappedReduce::new(r.clone(), &params, buckets, Reduction::AllReduce)
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
        if cfg.zero == 1 {
            ensure!(
                params.iter().all(|p| p.kind() == Kind::Float),
                "ZeRO-1 shards FP32 master weights; this model has parameters of another dtype"
            );
        }
        ensure!(
            cfg.zero == 1 || cfg.reduce_scatter.is_none(),
            "[distributed] reduce_scatter chooses how ZeRO-1 sums gradients: set zero = 1 or \
             remove it"
        );
        let device = params[0].device();
        let buckets = plan_buckets(&params, &backward_order(vs, &params), bucket_bytes);
        let zero = (cfg.zero == 1).then(|| {
            let numels: Vec<i64> = params.iter().map(|p| p.numel() as i64).collect();
            let bucket = (bucket_bytes / Kind::Float.elt_size_in_bytes()) as i64;
            let plan = ShardPlan::new(&buckets, &numels, group.rank, group.world_size, bucket);
            let zeros = |n| Tensor::zeros([n], (Kind::Float, device));
            let round = plan.rounds.iter().map(|r| r.len).max().unwrap_or(0) * plan.world;
            Zero1 {
                shard: zeros(plan.shard),
                scattered: cfg
                    .reduce_scatter
                    .unwrap_or(group.backend() == Backend::Nccl),
                rounds: [zeros(round), zeros(round)],
                plan,
            }
        });
        let reduction = match &zero {
            Some(z) if z.scattered => Reduction::ReduceScatter(
                z.plan
                    .parts
                    .iter()
                    .map(|&(at, len)| z.shard.narrow(0, at, len))
                    .collect(),
            ),
            _ => Reduction::AllReduce,
        };
        let group = Arc::new(group);
        let overlap = OverlappedReduce::new(group.clone(), &params, buckets, reduction)?;
        Ok(Self {
            group,
            params,
            names,
            zero,
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
            zero.plan
                .pieces
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
        let mut sharded = AdamW::with_slots(slots, cfg.clone(), MomentStore::Beside);
        // Deferred moments that nothing restored stay unallocated: the shards start at zero.
        let moments: BTreeMap<String, Tensor> = full
            .state_tensors()
            .into_iter()
            .filter(|(_, m)| m.defined())
            .collect();
        if !moments.is_empty() {
            sharded.load_state_tensors(&moments, full.steps)?;
        }
        sharded.steps = full.steps;
        Ok(Some(sharded))
    }

    /// The moments of whole parameters, for a checkpoint: with ZeRO-1 gathered from every rank's
    /// shard in rounds straight into host memory (every rank must call this; only the leader,
    /// which writes the checkpoint, keeps the shared parameters' moments, so no rank holds the
    /// whole state on its device), otherwise `optimizer`'s own.
    pub fn moments(&self, optimizer: &AdamW, kind: Kind) -> Result<Vec<(String, Tensor)>> {
        let Some(zero) = &self.zero else {
            return Ok(optimizer.state_tensors());
        };
        let mine: BTreeMap<String, Tensor> = optimizer.state_tensors().into_iter().collect();
        let mut out = Vec::new();
        for suffix in ["exp_avg", "exp_avg_sq"] {
            tch::no_grad(|| {
                for &(i, _, at, len) in &zero.plan.pieces {
                    let m = &mine[&format!("{}.{suffix}", self.names[i])];
                    zero.shard.narrow(0, at, len).copy_(m);
                }
            });
            let whole: Vec<Tensor> = match self.is_leader() {
                true => self
                    .params
                    .iter()
                    .map(|p| Tensor::empty(p.size().as_slice(), (kind, Device::Cpu)))
                    .collect(),
                false => Vec::new(),
            };
            self.gather_rounds(zero, |i, start, values| {
                if let Some(m) = whole.get(i) {
                    m.view([-1])
                        .narrow(0, start, values.numel() as i64)
                        .copy_(values);
                }
            })?;
            out.extend(
                self.names
                    .iter()
                    .zip(whole)
                    .map(|(name, m)| (format!("{name}.{suffix}"), m)),
            );
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
    /// expert counted once, for the global norm) on the device. None without experts.
    fn reduce_expert_gradients(&self, anywhere: &[bool]) -> Result<Option<Tensor>> {
        let Some(experts) = &self.experts else {
            return Ok(None);
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
        let squares = AdamW::grad_squares(&defined, experts.params[0].device());
        experts
            .group
            .group()
            .all_reduce(&squares, ReduceOp::Sum)?
            .wait()?;
        Ok(Some(squares))
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
        std::iter::once(&self.overlap)
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
        let mut local = reached(Some(&self.overlap), &self.params)?;
        if let Some(experts) = &self.experts {
            local.extend(reached(experts.overlap.as_ref(), &experts.params)?);
        }
        Ok(local)
    }

    /// Gradient buckets whose sum started during this step's backward.
    pub fn overlapped_buckets(&self) -> u64 {
        self.overlap.overlapped() as u64
    }

    /// Combines the step's statistics over ranks and readies the gradients for `step`: returns
    /// which parameters (those held by every rank, then this rank's experts) got a gradient on
    /// some rank holding them, after giving those without one here a zero gradient. `local`
    /// says which got one here (`after_last_backward`).
    pub fn reduce_stats(&self, stats: &mut StepStats, local: &[bool]) -> Result<Vec<bool>> {
        let n_means = stats.means.numel() as i64;
        let (shared, own) = local.split_at(self.params.len());
        let flags: Vec<f64> = shared.iter().map(|&l| l as u8 as f64).collect();
        // On the parameters' device: NCCL moves CUDA tensors only.
        let device = self.params[0].device();
        let mut parts = vec![
            stats.means.to_kind(Kind::Double).to_device(device),
            upload(&Tensor::from_slice(&flags), device)?,
        ];
        let counts = stats.loads.iter_mut().chain([&mut stats.dropped]);
        let counts: Vec<&mut Tensor> = counts.collect();
        parts.extend(
            counts
                .iter()
                .map(|l| l.to_kind(Kind::Double).to_device(device).view([-1])),
        );
        let all = Tensor::cat(&parts, 0);
        self.group.all_reduce(&all, ReduceOp::Sum)?.wait()?;
        let flags = Vec::<f64>::try_from(&all.narrow(0, n_means, flags.len() as i64))?;
        let mut anywhere: Vec<bool> = flags.iter().map(|&n| n > 0.0).collect();
        // The sums stay on the device: the trainer reads them with the step's other statistics.
        stats.means = all.narrow(0, 0, n_means) / self.world_size() as f64;
        let mut offset = n_means + flags.len() as i64;
        for load in counts {
            let n = load.numel() as i64;
            *load = all
                .narrow(0, offset, n)
                .view(load.size().as_slice())
                .to_kind(load.kind());
            offset += n;
        }
        let mut all_params: Vec<&Tensor> = self.params.iter().collect();
        if let Some(experts) = &self.experts {
            let flags: Vec<f64> = own.iter().map(|&l| l as u8 as f64).collect();
            let flags = upload(&Tensor::from_slice(&flags), device)?;
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
        self.overlap.wait()?;
        let Some(zero) = &self.zero else {
            release_unreached(&self.params, shared);
            if self.experts.is_none() {
                let norm = optimizer.grad_norm();
                optimizer.step(lr, norm);
                return Ok(norm);
            }
            let expert_squares = self.reduce_expert_gradients(own)?;
            let defined: Vec<Tensor> = self
                .params
                .iter()
                .map(Tensor::grad)
                .filter(Tensor::defined)
                .collect();
            let squares = AdamW::grad_squares(&defined, self.params[0].device());
            let norm = global_norm(&squares, expert_squares.as_ref());
            optimizer.step(lr, norm);
            return Ok(norm);
        };
        let expert_squares = self.reduce_expert_gradients(own)?;
        tch::no_grad(|| {
            let plan = &zero.plan;
            // The summed gradient of this rank's shard, piece by piece: reduce-scattered into the
            // shard, or a view of the whole sums the all-reduce gave every rank.
            let pieces: Vec<Tensor> = plan
                .pieces
                .iter()
                .map(|&(i, start, at, len)| match zero.scattered {
                    true => zero.shard.narrow(0, at, len),
                    false => self.params[i].grad().view([-1]).narrow(0, start, len),
                })
                .collect();
            release_grads(&self.params);
            // The optimizer's slots: this rank's pieces of the shared parameters, then its experts.
            let mut grads: BTreeMap<&str, Tensor> = plan
                .pieces
                .iter()
                .zip(pieces)
                .filter(|(&(i, ..), _)| shared[i])
                .map(|(&(i, ..), g)| (self.names[i].as_str(), g))
                .collect();
            let pieces: Vec<Tensor> = grads.values().map(Tensor::shallow_clone).collect();
            let squares = AdamW::grad_squares(&pieces, self.params[0].device());
            self.group.all_reduce(&squares, ReduceOp::Sum)?.wait()?;
            let norm = global_norm(&squares, expert_squares.as_ref());
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
            self.all_gather(zero)?;
            Ok(norm)
        })
    }

    /// Hands every rank the whole updated model: this rank's updated pieces go into `zero.shard`,
    /// which is gathered from every rank into the parameters.
    fn all_gather(&self, zero: &Zero1) -> Result<()> {
        for &(i, start, at, len) in &zero.plan.pieces {
            let piece = self.params[i].view([-1]).narrow(0, start, len);
            zero.shard.narrow(0, at, len).copy_(&piece);
        }
        self.gather_rounds(zero, |i, start, values| {
            self.params[i]
                .view([-1])
                .narrow(0, start, values.numel() as i64)
                .copy_(values);
        })
    }

    /// All-gathers every rank's `zero.shard` in rounds and hands `place` each piece of a
    /// parameter (its index, the piece's start in it, the gathered values), one round's pieces
    /// while the next round's collective runs.
    fn gather_rounds(
        &self,
        zero: &Zero1,
        mut place: impl FnMut(usize, i64, &Tensor),
    ) -> Result<()> {
        let mut unpack = |k: usize, work: Work| -> Result<()> {
            work.wait()?;
            let buffer = &zero.rounds[k % 2];
            tch::no_grad(|| {
                for &(i, start, at, n) in &zero.plan.rounds[k].pieces {
                    place(i, start, &buffer.narrow(0, at, n));
                }
            });
            Ok(())
        };
        let mut previous: Option<(usize, Work)> = None;
        for k in 0..zero.plan.rounds.len() {
            let (buffer, mine) = zero.round(k);
            let work = self.group.all_gather(&buffer, &mine)?;
            if let Some((j, done)) = previous.replace((k, work)) {
                unpack(j, done)?;
            }
        }
        previous.map_or(Ok(()), |(j, work)| unpack(j, work))
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

    /// Parameters of 3, 5 and 2 elements in buckets [2, 1] and [0] over 3 ranks: the first bucket
    /// (7 elements, padded to 9) gives each rank 3, the second (3) gives each 1; a shard is its two
    /// parts end to end, and each bucket is one all-gather round.
    #[test]
    fn zero1_cuts_every_bucket_into_equal_parts() {
        let buckets = [vec![2, 1], vec![0]];
        let plans: Vec<_> = (0..3)
            .map(|r| ShardPlan::new(&buckets, &[3, 5, 2], r, 3, 1 << 20))
            .collect();
        assert!(plans.iter().all(|z| z.shard == 4));
        assert!(plans.iter().all(|z| z.parts == [(0, 3), (3, 1)]));
        assert_eq!(plans[0].pieces, [(2, 0, 0, 2), (1, 0, 2, 1), (0, 0, 3, 1)]);
        assert_eq!(plans[1].pieces, [(1, 1, 0, 3), (0, 1, 3, 1)]);
        assert_eq!(plans[2].pieces, [(1, 4, 0, 1), (0, 2, 3, 1)]);
        assert_eq!(
            plans[0].rounds,
            [
                Round {
                    at: 0,
                    len: 3,
                    pieces: vec![(2, 0, 0, 2), (1, 0, 2, 1), (1, 1, 3, 3), (1, 4, 6, 1)],
                },
                Round {
                    at: 3,
                    len: 1,
                    pieces: vec![(0, 0, 0, 1), (0, 1, 1, 1), (0, 2, 2, 1)],
                },
            ]
        );
    }

    /// A bucket of one parameter larger than the round size (10 elements, padded to 12, over 3
    /// ranks in rounds of 3): four rounds, round j taking element j of every rank's part of 4.
    #[test]
    fn zero1_gathers_a_large_bucket_in_several_rounds() {
        let plan = ShardPlan::new(&[vec![0]], &[10], 0, 3, 3);
        let rounds: Vec<(i64, i64, Vec<Piece>)> = plan
            .rounds
            .into_iter()
            .map(|r| (r.at, r.len, r.pieces))
            .collect();
        assert_eq!(
            rounds,
            [
                (0, 1, vec![(0, 0, 0, 1), (0, 4, 1, 1), (0, 8, 2, 1)]),
                (1, 1, vec![(0, 1, 0, 1), (0, 5, 1, 1), (0, 9, 2, 1)]),
                (2, 1, vec![(0, 2, 0, 1), (0, 6, 1, 1)]),
                (3, 1, vec![(0, 3, 0, 1), (0, 7, 1, 1)]),
            ]
        );
    }

    /// Whatever the sizes, buckets and world: the ranks' pieces cover every parameter element
    /// exactly once (at most one piece of a parameter per rank), and so do the rounds, whose
    /// buffers never exceed a bucket (rounded up to the world size) and whose rank-r part holds
    /// exactly what rank r's shard holds at the round's place; a bucket that fits is one round.
    #[test]
    fn zero1_parts_and_rounds_cover_every_element_once() {
        let models: [&[i64]; 3] = [&[7], &[1000, 1, 33, 517, 2048], &[5, 5, 5, 5, 5, 5]];
        for numels in models {
            for world in 1..=4usize {
                for bucket in [1, 7, 64, 1000, 1 << 20] {
                    // As `plan_buckets` groups them: in reverse, at most `bucket` (a larger alone).
                    let mut buckets: Vec<Vec<usize>> = Vec::new();
                    let mut sum = 0;
                    for i in (0..numels.len()).rev() {
                        match buckets.last_mut() {
                            Some(b) if sum + numels[i] <= bucket => b.push(i),
                            _ => {
                                buckets.push(vec![i]);
                                sum = 0;
                            }
                        }
                        sum += numels[i];
                    }
                    let case = format!("{numels:?} over {world} ranks in buckets of {bucket}");
                    let zeros = || -> Vec<Vec<u8>> {
                        numels.iter().map(|&n| vec![0; n as usize]).collect()
                    };
                    let (mut owned, mut gathered) = (zeros(), zeros());
                    for rank in 0..world {
                        let plan = ShardPlan::new(&buckets, numels, rank, world, bucket);
                        for (b, &(at, len)) in buckets.iter().zip(&plan.parts) {
                            let rounds = plan
                                .rounds
                                .iter()
                                .filter(|r| (at..at + len).contains(&r.at));
                            let fits = b.iter().map(|&i| numels[i]).sum::<i64>() <= bucket;
                            assert!(!fits || rounds.count() == 1, "{case}: bucket {b:?}");
                        }
                        let mut shard: Vec<Option<(usize, i64)>> = vec![None; plan.shard as usize];
                        let mut seen = vec![false; numels.len()];
                        for &(i, start, at, n) in &plan.pieces {
                            assert!(!std::mem::replace(&mut seen[i], true), "{case}");
                            for e in 0..n {
                                owned[i][(start + e) as usize] += 1;
                                let slot = &mut shard[(at + e) as usize];
                                assert!(slot.replace((i, start + e)).is_none(), "{case}");
                            }
                        }
                        for round in &plan.rounds {
                            let w = world as i64;
                            assert!(round.len * w < bucket + w, "{case}");
                            let mut slots = vec![false; (round.len * w) as usize];
                            for &(i, start, at, n) in &round.pieces {
                                for e in 0..n {
                                    let pos = at + e;
                                    assert!(!std::mem::replace(&mut slots[pos as usize], true));
                                    if pos / round.len == rank as i64 {
                                        let mine = round.at + pos % round.len;
                                        assert_eq!(shard[mine as usize], Some((i, start + e)));
                                    }
                                    if rank == 0 {
                                        gathered[i][(start + e) as usize] += 1;
                                    }
                                }
                            }
                        }
                    }
                    assert!(owned.iter().flatten().all(|&c| c == 1), "pieces: {case}");
                    assert!(gathered.iter().flatten().all(|&c| c == 1), "rounds: {case}");
                }
            }
        }
    }
}
