//! Expert parallelism for DeepSeekMoE (DeepSeek-V2 §3.1 and V3 §3.2 train this way): the routed
//! experts of every MoE layer are split evenly over the E ranks of an expert-parallel (EP) group,
//! and token copies travel to the rank that holds their expert and back by all-to-all.
//!
//! Layout (torchtitan's and Megatron's): the world of W ranks is cut into W/E EP groups of E
//! consecutive ranks; rank r holds experts `(r mod E)·n/E ..` and is, for those experts, one of
//! W/E replicas (the ranks with the same `r mod E`), whose expert gradients are summed among
//! themselves only. Attention, shared experts, dense layers, embedding and head stay data
//! parallel over the whole world.
//!
//! One MoE layer's routed part on rank r, after the gate sorted its token copies by expert:
//! 1. the per-expert copy counts of every rank of the group are all-gathered (a few integers), so
//!    every rank knows what it sends and receives;
//! 2. the copies go out with one all-to-all (uneven splits), arrive ordered by source rank then
//!    expert, are regrouped by expert, run through the local experts, put back in arrival order,
//!    and return with the reverse all-to-all;
//! 3. the backward does the same in reverse: each all-to-all is an autograd node whose backward is
//!    the opposite all-to-all. Every rank builds the same graph shape (a layer's exchange nodes
//!    exist even when a rank sends or receives nothing), so the ranks meet in the backward in the
//!    same order.

use std::sync::{Arc, Mutex};

use anyhow::{ensure, Context, Result};
use tch::{Kind, Tensor};

use crate::config::ModelConfig;
use crate::custom_grad::{self, CustomGrad};
use crate::dist::ProcessGroup;
use crate::experts::{self, ExpertsPath};
use crate::host_memory::upload;
use crate::mlp::Mlp;

/// Which routed experts a process holds: `first .. first + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertShard {
    pub first: i64,
    pub count: i64,
}

impl ExpertShard {
    /// Every one of `n_experts` experts (a single process).
    pub fn all(n_experts: i64) -> Self {
        Self {
            first: 0,
            count: n_experts,
        }
    }

    pub fn holds(&self, expert: i64) -> bool {
        (self.first..self.first + self.count).contains(&expert)
    }
}

/// Where a rank stands in the expert-parallel layout of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertLayout {
    /// Ranks per EP group (1: no expert parallelism).
    pub ep: usize,
    pub rank: usize,
    pub world: usize,
}

impl ExpertLayout {
    /// The layout of `rank` in a world of `world` ranks with EP groups of `ep` ranks, for the
    /// model `cfg`. A single process holds every expert whatever `ep` says, so that a checkpoint
    /// of an EP run resumes on one process.
    pub fn new(ep: usize, rank: usize, world: usize, cfg: &ModelConfig) -> Result<Self> {
        let n_experts = cfg.n_routed_experts;
        let ep = if world == 1 { 1 } else { ep.max(1) };
        ensure!(
            world.is_multiple_of(ep),
            "[distributed] expert_parallel = {ep} must divide the number of ranks ({world})"
        );
        ensure!(
            ep == 1 || (n_experts > 0 && (n_experts as u64).is_multiple_of(ep as u64)),
            "[distributed] expert_parallel = {ep} must divide the model's {n_experts} routed experts"
        );
        // Device-limited routing bounds the ranks a token reaches only when each rank holds
        // whole devices.
        ensure!(
            ep == 1
                || cfg.n_limited_devices >= cfg.n_devices
                || (cfg.n_devices as u64).is_multiple_of(ep as u64),
            "device-limited routing over n_devices = {} needs expert_parallel ({ep}) to divide it, \
             so that each rank holds whole devices",
            cfg.n_devices
        );
        Ok(Self { ep, rank, world })
    }

    /// A process training alone.
    pub fn single() -> Self {
        Self {
            ep: 1,
            rank: 0,
            world: 1,
        }
    }

    /// This rank's number inside its EP group.
    pub fn ep_rank(&self) -> usize {
        self.rank % self.ep
    }

    /// The ranks of this rank's EP group, in EP-rank order.
    pub fn ep_members(&self) -> Vec<usize> {
        let start = self.rank - self.ep_rank();
        (start..start + self.ep).collect()
    }

    /// The ranks holding the same experts as this one (its EP-rank in every EP group).
    pub fn replica_members(&self) -> Vec<usize> {
        (self.ep_rank()..self.world).step_by(self.ep).collect()
    }

    /// The experts of this rank, of `n_experts`.
    pub fn shard(&self, n_experts: i64) -> ExpertShard {
        let count = n_experts / self.ep as i64;
        ExpertShard {
            first: self.ep_rank() as i64 * count,
            count,
        }
    }
}

/// EP groups the autograd engine reaches from a backward (which gets only an integer): the
/// group of an exchange node is `GROUPS[flags]`.
static GROUPS: Mutex<Vec<Arc<ProcessGroup>>> = Mutex::new(Vec::new());

fn registered(id: i64) -> Result<Arc<ProcessGroup>> {
    let groups = GROUPS.lock().expect("EP group registry");
    groups
        .get(id as usize)
        .cloned()
        .with_context(|| format!("no expert-parallel group {id}"))
}

/// The EP group of this rank as the MoE layers use it.
pub struct ExpertGroup {
    group: Arc<ProcessGroup>,
    /// Index of `group` in `GROUPS`.
    id: i64,
    /// This rank's experts.
    pub shard: ExpertShard,
}

impl std::fmt::Debug for ExpertGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ExpertGroup {{ rank {} of {}, experts {:?} }}",
            self.group.rank, self.group.world_size, self.shard
        )
    }
}

impl ExpertGroup {
    /// Registers `group` (the EP group, numbered by EP rank) for the exchanges of `shard`.
    pub fn new(group: ProcessGroup, shard: ExpertShard) -> Self {
        let group = Arc::new(group);
        let mut groups = GROUPS.lock().expect("EP group registry");
        groups.push(group.clone());
        Self {
            group,
            id: groups.len() as i64 - 1,
            shard,
        }
    }

    pub fn group(&self) -> &ProcessGroup {
        &self.group
    }

    /// Runs the routed experts of one layer over the EP group: `sorted` holds this rank's token
    /// copies `[copies, dim]` sorted by expert, `counts[e]` of them for (global) expert `e`;
    /// `experts` are this rank's and run along `path`. Returns the experts' outputs for `sorted`,
    /// in its order.
    pub fn run(
        &self,
        path: ExpertsPath,
        sorted: &Tensor,
        counts: &[i64],
        experts: &[Mlp],
    ) -> Result<Tensor> {
        let (ep, per) = (self.group.world_size, self.shard.count);
        ensure!(
            counts.len() as i64 == ep as i64 * per && experts.len() as i64 == per,
            "expert counts do not match the EP layout"
        );
        // 1. Every rank's copy counts per expert: `all[src * n + e]`.
        let all = {
            // On the tokens' device: NCCL moves CUDA tensors only.
            let mine = upload(&Tensor::from_slice(counts), sorted.device())?;
            let out = mine.new_zeros(
                [counts.len() as i64 * ep as i64],
                (Kind::Int64, mine.device()),
            );
            self.group.all_gather(&out, &mine)?.wait()?;
            Vec::<i64>::try_from(&out)?
        };
        let n = counts.len();
        let of = |src: usize, k: i64| all[src * n + (self.shard.first + k) as usize];
        let send: Vec<i64> = (0..ep)
            .map(|r| {
                counts[r * per as usize..(r + 1) * per as usize]
                    .iter()
                    .sum()
            })
            .collect();
        let recv: Vec<i64> = (0..ep)
            .map(|src| (0..per).map(|k| of(src, k)).sum())
            .collect();
        // 2. Dispatch, regroup by expert, compute, restore arrival order, combine.
        let received = self.exchange(sorted, &send, &recv)?;
        let mut by_expert = Vec::with_capacity(recv.iter().sum::<i64>() as usize);
        let mut chunk_start = 0;
        let mut starts = vec![0i64; ep];
        for (src, start) in starts.iter_mut().enumerate() {
            *start = chunk_start;
            chunk_start += recv[src];
        }
        for k in 0..per {
            for (src, start) in starts.iter_mut().enumerate() {
                let c = of(src, k);
                by_expert.extend(*start..*start + c);
                *start += c;
            }
        }
        let order = upload(&Tensor::from_slice(&by_expert), sorted.device())?;
        let grouped = received.index_select(0, &order);
        let sizes: Vec<i64> = (0..per)
            .map(|k| (0..ep).map(|src| of(src, k)).sum())
            .collect();
        let sizes = upload(&Tensor::from_slice(&sizes), sorted.device())?;
        // In the dispatch dtype, which every rank shares (the combine's buffers are allocated
        // from it).
        let computed = experts::forward(path, experts, &grouped, &sizes).to_kind(sorted.kind());
        let arrival = computed.index_select(0, &order.argsort(0, false));
        self.exchange(&arrival, &recv, &send)
    }

    /// Differentiable all-to-all: `send[r]` rows of `x` to rank r, `recv[r]` rows from it.
    fn exchange(&self, x: &Tensor, send: &[i64], recv: &[i64]) -> Result<Tensor> {
        let x = x.contiguous();
        let out = tch::no_grad(|| all_to_all(&self.group, &x, send, recv))?;
        if !x.requires_grad() {
            return Ok(out);
        }
        let saved = [Tensor::from_slice(send), Tensor::from_slice(recv)];
        custom_grad::apply::<Exchange>(&[&x], &out, &saved, self.id)
    }
}

/// `x`'s rows sent by `send` counts, received by `recv` counts, into a new tensor.
fn all_to_all(group: &ProcessGroup, x: &Tensor, send: &[i64], recv: &[i64]) -> Result<Tensor> {
    let mut shape = x.size();
    shape[0] = recv.iter().sum();
    let out = Tensor::empty(shape.as_slice(), (x.kind(), x.device()));
    group.all_to_all(&out, x, recv, send)?.wait()?;
    Ok(out)
}

/// The backward of an exchange: the gradient goes back the way the rows came.
struct Exchange;

impl CustomGrad for Exchange {
    fn backward(id: i64, saved: &[Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let send = Vec::<i64>::try_from(&saved[0])?;
        let recv = Vec::<i64>::try_from(&saved[1])?;
        let group = registered(id)?;
        let back = all_to_all(&group, &grad.contiguous(), &recv, &send)
            .context("expert-parallel backward all-to-all")?;
        Ok(vec![Some(back)])
    }
}

/// For a checkpoint: this rank's expert tensors `local` (names with this rank's expert numbers)
/// gathered from every rank of the EP group, renamed with each rank's expert numbers. Every rank
/// of the group must call this with tensors of the same names modulo the expert number.
pub fn gather_experts(
    group: &ExpertGroup,
    local: &[(String, Tensor)],
) -> Result<Vec<(String, Tensor)>> {
    let pg = group.group();
    let shard = group.shard;
    let mut keyed: Vec<(String, i64, String, &Tensor)> = local
        .iter()
        .map(|(name, t)| {
            let (prefix, e, rest) = split_expert_name(name)
                .with_context(|| format!("{name} is not a routed expert's tensor"))?;
            Ok((prefix.to_string(), e - shard.first, rest.to_string(), t))
        })
        .collect::<Result<_>>()?;
    keyed.sort_by(|a, b| (&a.0, a.1, &a.2).cmp(&(&b.0, b.1, &b.2)));
    let launched = keyed
        .iter()
        .map(|(_, _, _, t)| {
            let t = t.detach().contiguous();
            let out = t.new_empty(
                [t.numel() as i64 * pg.world_size as i64],
                (t.kind(), t.device()),
            );
            let work = pg.all_gather(&out, &t.view([-1]))?;
            Ok((out, work))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut gathered = Vec::new();
    for ((prefix, k, rest, t), (out, work)) in keyed.iter().zip(launched) {
        work.wait()?;
        for (r, piece) in out.chunk(pg.world_size as i64, 0).iter().enumerate() {
            let e = r as i64 * shard.count + k;
            gathered.push((
                format!("{prefix}{e}{rest}"),
                piece.view(t.size().as_slice()),
            ));
        }
    }
    Ok(gathered)
}

/// `(prefix, e, rest)` of a routed expert's tensor name `prefix{e}rest`, e.g.
/// `model.layers.1.mlp.experts.` `5` `.up_proj.weight`; None for any other name.
pub fn split_expert_name(name: &str) -> Option<(&str, i64, &str)> {
    const MARK: &str = ".mlp.experts.";
    let at = name.find(MARK)? + MARK.len();
    let digits = name[at..].find(|c: char| !c.is_ascii_digit())?;
    let e = name[at..at + digits].parse().ok()?;
    Some((&name[..at], e, &name[at + digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tiny` with `n` routed experts.
    fn experts(n: i64) -> ModelConfig {
        let mut cfg = crate::testing::tiny_config();
        cfg.n_routed_experts = n;
        cfg
    }

    #[test]
    fn layout_of_two_ep_groups_of_two() {
        let layouts: Vec<ExpertLayout> = (0..4)
            .map(|r| ExpertLayout::new(2, r, 4, &experts(8)).unwrap())
            .collect();
        assert_eq!(layouts[3].ep_members(), [2, 3]);
        assert_eq!(layouts[3].replica_members(), [1, 3]);
        assert_eq!(layouts[2].replica_members(), [0, 2]);
        assert_eq!(layouts[3].shard(8), ExpertShard { first: 4, count: 4 });
        assert!(
            ExpertLayout::new(3, 0, 4, &experts(8)).is_err(),
            "3 does not divide 4 ranks"
        );
        assert!(
            ExpertLayout::new(4, 0, 4, &experts(6)).is_err(),
            "4 does not divide 6 experts"
        );
        let alone = ExpertLayout::new(2, 0, 1, &experts(8)).unwrap();
        assert_eq!(alone.shard(8), ExpertShard::all(8), "one process holds all");
        let mut limited = experts(16);
        (limited.n_devices, limited.n_limited_devices) = (4, 2);
        assert!(
            ExpertLayout::new(2, 0, 8, &limited).is_ok(),
            "2 devices per rank"
        );
        let err = ExpertLayout::new(8, 0, 8, &limited)
            .unwrap_err()
            .to_string();
        assert!(err.contains("whole devices"), "{err}");
    }

    /// The most EP ranks (of 4, holding 4 of 16 experts each) any of 512 tokens reaches with
    /// `cfg`'s routing (top-6).
    fn most_ranks_per_token(cfg: &ModelConfig) -> usize {
        tch::manual_seed(3);
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let gate = crate::moe::Gate::new(vs.root() / "gate", cfg);
        let x = Tensor::randn([512, cfg.dim], (Kind::Float, tch::Device::Cpu));
        let picks = Vec::<Vec<i64>>::try_from(&gate.forward(&x).indices).unwrap();
        let shards: Vec<ExpertShard> = (0..4)
            .map(|r| ExpertLayout::new(4, r, 4, cfg).unwrap().shard(16))
            .collect();
        picks
            .iter()
            .map(|chosen| {
                shards
                    .iter()
                    .filter(|shard| chosen.iter().any(|&e| shard.holds(e)))
                    .count()
            })
            .max()
            .unwrap()
    }

    /// DeepSeek-V2's device-limited routing with one device per EP rank (and V3's group-limited
    /// routing with one group per rank) sends each token to at most M ranks; without a limit
    /// the same router reaches more.
    #[test]
    fn device_limited_routing_bounds_the_ranks_per_token() {
        let mut cfg = experts(16);
        cfg.n_activated_experts = 6;
        cfg.n_expert_groups = 1;
        cfg.n_limited_groups = 1;
        assert!(most_ranks_per_token(&cfg) > 2, "unlimited routing");
        (cfg.n_devices, cfg.n_limited_devices) = (4, 2);
        assert_eq!(most_ranks_per_token(&cfg), 2, "device-limited, M = 2");
        (cfg.n_devices, cfg.n_limited_devices) = (1, 1);
        (cfg.n_expert_groups, cfg.n_limited_groups) = (4, 2);
        assert_eq!(
            most_ranks_per_token(&cfg),
            2,
            "group-limited, 2 of 4 groups"
        );
    }

    #[test]
    fn expert_names() {
        assert_eq!(
            split_expert_name("model.layers.1.mlp.experts.12.up_proj.weight"),
            Some(("model.layers.1.mlp.experts.", 12, ".up_proj.weight"))
        );
        assert_eq!(
            split_expert_name("model.layers.1.mlp.shared_experts.up_proj.weight"),
            None
        );
    }
}
