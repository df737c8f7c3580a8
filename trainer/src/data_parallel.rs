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
//! and an all-gather hands every rank the whole updated model. Both run in rounds of `bucket_mb`
//! (see `ShardPlan`), so their buffers stay small beside the model. Checkpoints gather the moments
//! back into whole parameters, round by round into the leader's host memory, so any world size,
//! with or without ZeRO, resumes them.
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
    /// MiB of gradients per all-reduce bucket (each starts during the backward once complete);
    /// with ZeRO-1 also the MiB each round of its reduce-scatter and all-gathers moves.
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

/// The ZeRO-1 layout and how its collectives walk it. The flat parameter vector is cut into one
/// contiguous shard per rank; the reduce-scatter of the gradients and the all-gather of the
/// parameters move it in rounds, each carrying `chunk` elements of every rank's shard, so their
/// buffers stay at a bucket's size (as DeepSpeed's `reduce_bucket_size` and
/// `allgather_bucket_size` bound them) instead of a flat copy of the whole model, which a large
/// model has no room for beside its weights and gradients.
struct ShardPlan {
    /// Ranks sharing the flat vector.
    world: i64,
    /// Elements of each rank's shard.
    shard: i64,
    /// The pieces of parameters inside this rank's shard, placed in the shard.
    pieces: Vec<Piece>,
    /// Elements of each rank's shard one round moves (the last round may move fewer).
    chunk: i64,
    /// For each round, the pieces of parameters in every rank's part of it, placed in the round's
    /// buffer (rank r's part at r × the round's length).
    rounds: Vec<Vec<Piece>>,
}

impl ShardPlan {
    /// Cuts `numels` (in order) into `world` equal contiguous shards, keeps `rank`'s pieces and
    /// plans rounds of at most `bucket` elements over all ranks (at least one per rank).
    fn new(numels: &[i64], rank: usize, world: usize, bucket: i64) -> Self {
        let total: i64 = numels.iter().sum();
        let world = world as i64;
        let shard = (total + world - 1) / world;
        let pieces = pieces_in(numels, rank as i64 * shard, (rank as i64 + 1) * shard, 0);
        let chunk = (bucket / world).clamp(1, shard.max(1));
        let rounds = (0..shard)
            .step_by(chunk as usize)
            .map(|from| {
                let len = chunk.min(shard - from);
                (0..world)
                    .flat_map(|r| {
                        let lo = r * shard + from;
                        pieces_in(numels, lo, lo + len, r * len)
                    })
                    .collect()
            })
            .collect();
        Self {
            world,
            shard,
            pieces,
            chunk,
            rounds,
        }
    }

    /// Elements of each rank's shard that round `k` moves.
    fn round_len(&self, k: usize) -> i64 {
        self.chunk.min(self.shard - k as i64 * self.chunk)
    }
}

/// This rank's ZeRO-1 layout and the buffers its collectives reuse from step to step.
struct Zero1 {
    plan: ShardPlan,
    /// This rank's shard: the reduce-scatter's summed gradients, then the updated parameters the
    /// all-gather sends.
    shard: Tensor,
    /// Two round buffers (every rank's part of a round): one is filled or emptied while the
    /// other's collective runs.
    rounds: [Tensor; 2],
}

impl Zero1 {
    /// Round `k`'s two sides: its buffer (every rank's part, in rank order) and this rank's part
    /// of `shard`.
    fn round(&self, k: usize) -> (Tensor, Tensor) {
        let len = self.plan.round_len(k);
        (
            self.rounds[k % 2].narrow(0, 0, self.plan.world * len),
            self.shard.narrow(0, k as i64 * self.plan.chunk, len),
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
        if cfg.zero == 1 {
            ensure!(
                params.iter().all(|p| p.kind() == Kind::Float),
                "ZeRO-1 shards FP32 master weights; this model has parameters of another dtype"
            );
        }
        let device = params[0].device();
        let zero = (cfg.zero == 1).then(|| {
            let numels: Vec<i64> = params.iter().map(|p| p.numel() as i64).collect();
            let bucket = (bucket_bytes / Kind::Float.elt_size_in_bytes()) as i64;
            let plan = ShardPlan::new(&numels, group.rank, group.world_size, bucket);
            let zeros = |n| Tensor::zeros([n], (Kind::Float, device));
            let round = plan.chunk * plan.world;
            Zero1 {
                shard: zeros(plan.shard),
                rounds: [zeros(round), zeros(round)],
                plan,
            }
        });
        ensure!(
            zero.is_some() || cfg.reduce_scatter.is_none(),
            "[distributed] reduce_scatter chooses how ZeRO-1 sums gradients: set zero = 1 or \
             remove it"
        );
        let reduce_scatter = cfg
            .reduce_scatter
            .unwrap_or(group.backend() == Backend::Nccl);
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
            let plan = &zero.plan;
            // The summed gradient of this rank's shard, piece by piece.
            let pieces: Vec<Tensor> = match &self.overlap {
                // Summed by the all-reduce: every rank has the whole sum; its shard is a view of it.
                Some(overlap) => {
                    overlap.wait()?;
                    plan.pieces
                        .iter()
                        .map(|&(i, start, _, len)| {
                            self.params[i].grad().view([-1]).narrow(0, start, len)
                        })
                        .collect()
                }
                None => {
                    self.reduce_scatter(zero, shared)?;
                    plan.pieces
                        .iter()
                        .map(|&(_, _, at, len)| zero.shard.narrow(0, at, len))
                        .collect()
                }
            };
            release_grads(&self.params);
            // The optimizer's slots: this rank's pieces of the shared parameters, then its experts.
            let mut grads: BTreeMap<&str, Tensor> = plan
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
            let device = self.params[0].device();
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
            self.all_gather(zero)?;
            Ok(norm)
        })
    }

    /// Sums every rank's gradients of this rank's shard into `zero.shard`, one reduce-scatter a
    /// round (gradients of parameters no rank reached, and the last shard's padding, count as
    /// zeros). A round's buffer is filled while the previous round's collective runs.
    fn reduce_scatter(&self, zero: &Zero1, reached: &[bool]) -> Result<()> {
        let mut running: [Option<Work>; 2] = [None, None];
        for (k, round) in zero.plan.rounds.iter().enumerate() {
            let (mut buffer, mine) = zero.round(k);
            // Its previous round's collective may still read it.
            running[k % 2].take().map(Work::wait).transpose()?;
            let covered: i64 = round.iter().map(|&(i, .., n)| n * reached[i] as i64).sum();
            if covered < buffer.numel() as i64 {
                let _ = buffer.zero_();
            }
            for &(i, start, at, n) in round.iter().filter(|&&(i, ..)| reached[i]) {
                let grad = self.params[i].grad().view([-1]).narrow(0, start, n);
                buffer.narrow(0, at, n).copy_(&grad);
            }
            running[k % 2] = Some(self.group.reduce_scatter(&mine, &buffer)?);
        }
        running.into_iter().flatten().try_for_each(Work::wait)
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
                for &(i, start, at, n) in &zero.plan.rounds[k] {
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

    /// 3 + 5 + 2 = 10 elements over 3 ranks: shards of 4 (the last padded by 2), and every
    /// element in exactly one piece.
    #[test]
    fn zero1_cuts_the_flat_parameters_into_equal_shards() {
        let plans: Vec<_> = (0..3)
            .map(|r| ShardPlan::new(&[3, 5, 2], r, 3, 1 << 20))
            .collect();
        assert!(plans.iter().all(|z| z.shard == 4));
        assert_eq!(plans[0].pieces, vec![(0, 0, 0, 3), (1, 0, 3, 1)]);
        assert_eq!(plans[1].pieces, vec![(1, 1, 0, 4)]);
        assert_eq!(plans[2].pieces, vec![(2, 0, 0, 2)]);
        // A bucket larger than the model: one round, the whole flat vector in rank order.
        assert_eq!(plans[0].rounds.len(), 1);
    }

    /// A bucket of 6 elements over 3 ranks moves 2 of each shard a round: rank r's part of round
    /// k is its shard's elements 2k..2k+2, placed at r × the round's length.
    #[test]
    fn zero1_rounds_take_a_chunk_of_every_shard() {
        let plan = ShardPlan::new(&[3, 5, 2], 0, 3, 6);
        assert_eq!(plan.chunk, 2);
        assert_eq!(
            plan.rounds,
            vec![
                // Flat 0..2 (rank 0), 4..6 (rank 1), 8..10 (rank 2).
                vec![(0, 0, 0, 2), (1, 1, 2, 2), (2, 0, 4, 2)],
                // Flat 2..4, 6..8, and rank 2's padding.
                vec![(0, 2, 0, 1), (1, 0, 1, 1), (1, 3, 2, 2)],
            ]
        );
        assert_eq!((plan.round_len(0), plan.round_len(1)), (2, 2));
    }

    /// Whatever the sizes, the rounds cover every parameter element exactly once, each round's
    /// pieces fit its buffer without overlapping, and no buffer exceeds the bucket.
    #[test]
    fn zero1_rounds_cover_every_element_once() {
        let models: [&[i64]; 3] = [&[7], &[1000, 1, 33, 517, 2048], &[5, 5, 5, 5, 5, 5]];
        for numels in models {
            for world in 1..=4usize {
                for bucket in [1, 7, 64, 1000, 1 << 20] {
                    let plan = ShardPlan::new(numels, 0, world, bucket);
                    let mut seen: Vec<Vec<u8>> =
                        numels.iter().map(|&n| vec![0; n as usize]).collect();
                    for (k, round) in plan.rounds.iter().enumerate() {
                        let len = plan.round_len(k);
                        assert!(len >= 1 && (len * world as i64 <= bucket.max(world as i64)));
                        let mut slots = vec![false; len as usize * world];
                        for &(i, start, at, n) in round {
                            for e in 0..n {
                                seen[i][(start + e) as usize] += 1;
                                assert!(!std::mem::replace(&mut slots[(at + e) as usize], true));
                            }
                        }
                    }
                    assert!(
                        seen.iter().flatten().all(|&c| c == 1),
                        "{numels:?} over {world} ranks in buckets of {bucket}"
                    );
                }
            }
        }
    }
}
