//! DeepSeekMoE (DeepSeek-V3 §2.1.2): always-on shared experts plus fine-grained routed experts.
//! The gate picks top-k experts per token by `affinity + bias` within the best groups, weights them
//! by the un-biased affinities, and the per-expert bias is nudged after each step toward balanced
//! load (auxiliary-loss-free balancing); a small sequence-wise balance loss complements it.
//! DeepSeek-V2's options are here too: device-limited routing, its device-level and communication
//! balance losses (`balance`), and token dropping with a capacity factor while training
//! (`capacity`).

use std::sync::Arc;

use tch::{nn, Kind, Tensor};

use crate::balance::balance_losses;
use crate::capacity::kept_assignments;
use crate::config::{ModelConfig, ScoreFunc};
use crate::expert_parallel::{ExpertGroup, ExpertShard};
use crate::experts::{self, tally, Dispatch, ExpertsPath};
use crate::linear::Precision;
use crate::mlp::Mlp;

/// The router. Its weight stays FP32 (it is not a `Linear`): routing decisions are precision
/// sensitive and the GEMM is tiny.
#[derive(Debug)]
pub struct Gate {
    pub weight: Tensor,
    /// Per-expert bias added to the affinities for choosing experts only
    /// (`e_score_correction_bias`); not trained by gradients.
    pub bias: Tensor,
    score_func: ScoreFunc,
    top_k: i64,
    n_groups: i64,
    n_limited_groups: i64,
    n_devices: i64,
    n_limited_devices: i64,
    route_scale: f64,
}

/// How a group of experts is scored when routing may use only the best groups.
#[derive(Clone, Copy)]
enum GroupScore {
    /// Sum of its two highest (biased) affinities: DeepSeek-V3's node-limited routing.
    TopTwoSum,
    /// Its highest affinity: DeepSeek-V2's device-limited routing (the M devices holding the
    /// token's highest-affinity experts).
    Max,
}

/// `choice [N, E]` with the experts outside each token's best `keep` of `groups` equal groups
/// set to -inf (unchanged when every group is kept).
fn limit_to_best_groups(choice: Tensor, groups: i64, keep: i64, score: GroupScore) -> Tensor {
    if keep >= groups {
        return choice;
    }
    let n = choice.size()[0];
    let grouped = choice.view([n, groups, -1]);
    let group_scores = match score {
        GroupScore::TopTwoSum => {
            grouped
                .topk(2, -1, true, false)
                .0
                .sum_dim_intlist(-1, false, Kind::Float)
        }
        GroupScore::Max => grouped.amax(-1, false),
    };
    let kept = group_scores.topk(keep, -1, true, false).1;
    let dropped =
        Tensor::ones([n, groups], (Kind::Bool, choice.device())).scatter_value(1, &kept, 0);
    grouped
        .masked_fill(&dropped.unsqueeze(-1), f64::NEG_INFINITY)
        .view([n, -1])
}

/// The routing decision for a batch of N tokens.
#[derive(Debug)]
pub struct Routing {
    /// Chosen experts `[N, k]`.
    pub indices: Tensor,
    /// Their weights `[N, k]`, from the un-biased affinities.
    pub weights: Tensor,
    /// All un-biased affinities `[N, n_routed_experts]` (for the balance loss).
    pub scores: Tensor,
}

impl Gate {
    pub fn new(path: nn::Path, cfg: &ModelConfig) -> Self {
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: cfg.init_std,
        };
        Self {
            weight: path.var("weight", &[cfg.n_routed_experts, cfg.dim], init),
            bias: path.zeros_no_train("e_score_correction_bias", &[cfg.n_routed_experts]),
            score_func: cfg.score_func,
            top_k: cfg.n_activated_experts,
            n_groups: cfg.n_expert_groups,
            n_limited_groups: cfg.n_limited_groups,
            n_devices: cfg.n_devices,
            n_limited_devices: cfg.n_limited_devices,
            route_scale: cfg.route_scale,
        }
    }

    /// Routes `x` of shape `[N, dim]`.
    pub fn forward(&self, x: &Tensor) -> Routing {
        let logits = x.to_kind(Kind::Float).linear::<Tensor>(&self.weight, None);
        let scores = match self.score_func {
            ScoreFunc::Softmax => logits.softmax(-1, Kind::Float),
            ScoreFunc::Sigmoid => logits.sigmoid(),
        };
        let choice = limit_to_best_groups(
            &scores + &self.bias,
            self.n_groups,
            self.n_limited_groups,
            GroupScore::TopTwoSum,
        );
        let choice = limit_to_best_groups(
            choice,
            self.n_devices,
            self.n_limited_devices,
            GroupScore::Max,
        );
        let indices = choice.topk(self.top_k, -1, true, false).1;
        let mut weights = scores.gather(1, &indices, false);
        if self.score_func == ScoreFunc::Sigmoid {
            weights = &weights / weights.sum_dim_intlist(-1, true, Kind::Float);
        }
        Routing {
            indices,
            weights: weights * self.route_scale,
            scores,
        }
    }
}

/// What an MoE layer reports besides its output.
#[derive(Debug)]
pub struct MoeStats {
    /// Tokens routed to each expert `[n_routed_experts]` (int64, no grad).
    pub load: Tensor,
    /// Sequence-wise (V2: expert-level) balance loss Σ_i f_i·P_i, averaged over sequences
    /// (before α).
    pub balance_loss: Tensor,
    /// DeepSeek-V2's device-level and communication balance losses, already weighted by the
    /// config's α2 and α3 (0 when both are off).
    pub device_comm_loss: Tensor,
    /// Token-to-expert assignments dropped for capacity (int64 scalar, no grad).
    pub dropped: Tensor,
}

#[derive(Debug)]
pub struct Moe {
    pub gate: Gate,
    /// The routed experts this process holds (all of them unless experts are parallel).
    pub experts: Vec<Mlp>,
    pub shared_experts: Option<Mlp>,
    /// How the routed experts run (`Auto` unless `Model::set_experts_path` chose).
    pub experts_path: ExpertsPath,
    n_experts: i64,
    top_k: i64,
    n_devices: i64,
    n_limited_devices: i64,
    capacity_factor: f64,
    device_balance_alpha: f64,
    comm_balance_alpha: f64,
    /// With expert parallelism: the EP group that holds the other experts.
    parallel: Option<Arc<ExpertGroup>>,
}

impl Moe {
    /// The layer with the routed experts of `shard`. Experts of other ranks are drawn too and
    /// dropped, so every expert's initial weights are the same whatever the layout.
    pub fn new(
        path: nn::Path,
        cfg: &ModelConfig,
        precision: &Precision,
        shard: ExpertShard,
    ) -> Self {
        let (d, inter, std) = (cfg.dim, cfg.moe_inter_dim, cfg.init_std);
        let experts_path = &path / "experts";
        let scratch = nn::VarStore::new(path.device());
        let experts = (0..cfg.n_routed_experts)
            .filter_map(|i| match shard.holds(i) {
                true => Some(Mlp::new(&experts_path / i, d, inter, std, precision)),
                false => {
                    Mlp::new(&scratch.root() / i, d, inter, std, precision);
                    None
                }
            })
            .collect();
        let shared_experts = (cfg.n_shared_experts > 0).then(|| {
            Mlp::new(
                &path / "shared_experts",
                d,
                cfg.n_shared_experts * inter,
                std,
                precision,
            )
        });
        Self {
            gate: Gate::new(&path / "gate", cfg),
            experts,
            shared_experts,
            experts_path: ExpertsPath::Auto,
            n_experts: cfg.n_routed_experts,
            top_k: cfg.n_activated_experts,
            n_devices: cfg.n_devices,
            n_limited_devices: cfg.n_limited_devices,
            capacity_factor: cfg.capacity_factor,
            device_balance_alpha: cfg.device_balance_alpha,
            comm_balance_alpha: cfg.comm_balance_alpha,
            parallel: None,
        }
    }

    /// From now on, exchanges token copies with the other experts' holders in `group`.
    pub fn set_expert_group(&mut self, group: Arc<ExpertGroup>) {
        self.parallel = Some(group);
    }

    /// `x` of shape `[batch, seq, dim]`. Token copies are sorted by expert so that each expert runs
    /// on a contiguous slice (see `experts`), then weighted and scattered back with `index_add`.
    /// `exempt [batch]` marks the sequences never dropped when training with a capacity factor;
    /// None (evaluation, inference) drops nothing.
    pub fn forward(&self, x: &Tensor, exempt: Option<&Tensor>) -> (Tensor, MoeStats) {
        let (b, s, d) = x.size3().expect("moe input must be [batch, seq, dim]");
        let flat = x.view([b * s, d]);
        let routing = self.gate.forward(&flat);
        let all = routing.indices.view([-1]);
        let load = tally(&all, self.n_experts);
        // The assignments (token-major: token t's j-th expert is t·K + j) that are computed.
        let kept = match exempt {
            Some(exempt) if self.capacity_factor > 0.0 => Some(kept_assignments(
                &all,
                &routing.scores.gather(1, &routing.indices, false).view([-1]),
                &exempt
                    .view([b, 1])
                    .expand([b, s * self.top_k], false)
                    .reshape([-1]),
                self.n_devices,
                self.n_experts / self.n_devices,
                self.capacity_factor,
            )),
            _ => None,
        };
        let dispatch = Dispatch::new(&routing.indices, self.n_experts, kept.as_ref());
        let dropped = Tensor::from(all.size()[0] - dispatch.token_of.size()[0]);
        let path = self
            .experts_path
            .resolve(x.device(), &self.experts[0].gate_proj.precision);
        let sorted = dispatch.gather(&flat);
        let routed = match &self.parallel {
            // A failed exchange (a dead or hung peer) ends the job with the collective's error.
            Some(ep) => ep
                .run(path, &sorted, &dispatch.counts(), &self.experts)
                .unwrap_or_else(|e| panic!("expert-parallel exchange failed: {e:#}")),
            None => experts::forward(path, &self.experts, &sorted, &dispatch.load),
        };
        let y = dispatch.combine(&routed, &routing.weights, b * s);
        let y = match &self.shared_experts {
            Some(shared) => y + shared.forward(&flat),
            None => y,
        };
        let losses = balance_losses(
            &routing.scores,
            &routing.indices,
            b,
            self.n_devices,
            self.n_limited_devices,
        );
        let stats = MoeStats {
            load,
            balance_loss: losses.expert,
            device_comm_loss: losses.device * self.device_balance_alpha
                + losses.comm * self.comm_balance_alpha,
            dropped,
        };
        (y.view([b, s, d]), stats)
    }
}

/// Auxiliary-loss-free balancing step: `b_i += γ·sign(mean_load − load_i)`, minus the mean of the
/// update so the bias stays zero-mean (as torchtitan does). `load` is the summed token count of
/// the whole optimizer step.
pub fn update_bias(bias: &mut Tensor, load: &Tensor, gamma: f64) {
    tch::no_grad(|| {
        let load = load.to_kind(Kind::Float);
        let delta = (load.mean(Kind::Float) - &load).sign() * gamma;
        let delta = &delta - delta.mean(Kind::Float);
        let _ = bias.g_add_(&delta);
    });
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;
    use crate::testing::tiny_config;

    /// An MoE layer of `cfg` with all its experts, on the CPU in FP32.
    fn layer(cfg: &ModelConfig) -> (nn::VarStore, Moe) {
        let vs = nn::VarStore::new(Device::Cpu);
        let moe = Moe::new(
            vs.root() / "mlp",
            cfg,
            &Precision::Fp32,
            ExpertShard::all(cfg.n_routed_experts),
        );
        (vs, moe)
    }

    fn gate_with(cfg: &ModelConfig, weight: &[f32], bias: &[f32]) -> Gate {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut gate = Gate::new(vs.root() / "gate", cfg);
        tch::no_grad(|| {
            gate.weight
                .copy_(&Tensor::from_slice(weight).view([cfg.n_routed_experts, cfg.dim]));
            gate.bias.copy_(&Tensor::from_slice(bias));
        });
        gate
    }

    /// 8 experts in 4 groups of 2, dim 8: with x = e_j the logit of expert i is weight[i][j].
    fn routing_config() -> ModelConfig {
        let mut cfg = tiny_config();
        cfg.dim = 8;
        cfg
    }

    fn logits_weight(logits: &[f32; 8]) -> Vec<f32> {
        let mut w = vec![0f32; 64];
        for (i, &l) in logits.iter().enumerate() {
            w[i * 8] = l;
        }
        w
    }

    fn route(gate: &Gate) -> (Vec<i64>, Vec<f32>) {
        let mut x = vec![0f32; 8];
        x[0] = 1.0;
        let r = gate.forward(&Tensor::from_slice(&x).view([1, 8]));
        let (idx, order) = r.indices.view([-1]).sort(0, false);
        let w = r.weights.view([-1]).index_select(0, &order);
        (Vec::try_from(&idx).unwrap(), Vec::try_from(&w).unwrap())
    }

    #[test]
    fn group_limited_routing_skips_strong_experts_of_weak_groups() {
        let cfg = routing_config();
        // Group sums of top-2: g0 = 2+2, g1 = 3+(-5), g2 = 1+1, g3 = -5-5. Expert 2 (logit 3) is the
        // single best expert but its group ranks third, so top-2 of the kept groups {0, 2} wins.
        let gate = gate_with(
            &cfg,
            &logits_weight(&[2.0, 2.0, 3.0, -5.0, 1.0, 1.0, -5.0, -5.0]),
            &[0.0; 8],
        );
        let (idx, w) = route(&gate);
        assert_eq!(idx, vec![0, 1]);
        // Sigmoid weights normalized over the chosen 2, times route_scale 2.5.
        assert!(
            (w[0] - 1.25).abs() < 1e-6 && (w[1] - 1.25).abs() < 1e-6,
            "{w:?}"
        );
    }

    #[test]
    fn bias_changes_the_choice_but_not_the_weights() {
        let cfg = routing_config();
        let logits = logits_weight(&[2.0, 1.0, 1.5, 1.4, -5.0, -5.0, -5.0, -5.0]);
        let (idx, _) = route(&gate_with(&cfg, &logits, &[0.0; 8]));
        assert_eq!(idx, vec![0, 2]);
        let (idx, w) = route(&gate_with(
            &cfg,
            &logits,
            &[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ));
        assert_eq!(idx, vec![0, 1], "bias makes expert 1 win");
        let s = |l: f32| 1.0 / (1.0 + (-l).exp());
        let expected0 = 2.5 * s(2.0) / (s(2.0) + s(1.0));
        assert!(
            (w[0] - expected0).abs() < 1e-5,
            "weights use un-biased scores: {w:?}"
        );
    }

    #[test]
    fn dispatch_equals_dense_per_token_reference() {
        let mut cfg = tiny_config();
        cfg.init_std = 0.1;
        tch::manual_seed(5);
        let (_vs, moe) = layer(&cfg);
        let x = Tensor::randn([2, 9, cfg.dim], (Kind::Float, Device::Cpu));
        let (y, stats) = moe.forward(&x, None);
        let flat = x.view([18, cfg.dim]);
        let r = moe.gate.forward(&flat);
        let idx = Vec::<Vec<i64>>::try_from(&r.indices).unwrap();
        let mut rows = Vec::new();
        for (t, chosen) in idx.iter().enumerate() {
            let token = flat.get(t as i64).unsqueeze(0);
            let shared = moe.shared_experts.as_ref().unwrap().forward(&token);
            let out = chosen.iter().enumerate().fold(shared, |out, (j, &e)| {
                let weight = r.weights.get(t as i64).get(j as i64);
                out + moe.experts[e as usize].forward(&token) * weight
            });
            rows.push(out);
        }
        let reference = Tensor::cat(&rows, 0).view([2, 9, cfg.dim]);
        let err = (&y - &reference).abs().max().double_value(&[]);
        assert!(err < 1e-5, "max error {err}");
        assert_eq!(
            stats.load.sum(Kind::Int64).int64_value(&[]),
            18 * cfg.n_activated_experts
        );
    }

    #[test]
    fn balance_loss_is_one_when_uniform() {
        let mut cfg = routing_config();
        cfg.score_func = ScoreFunc::Softmax;
        cfg.n_expert_groups = 1;
        cfg.n_limited_groups = 1;
        let (_vs, moe) = layer(&cfg);
        tch::no_grad(|| {
            let _ = moe.gate.weight.shallow_clone().zero_();
        });
        // Equal scores: P_i = 1/8; ties route every token to the same 2 experts: f = 4 for those.
        let (_, stats) = moe.forward(&Tensor::ones([1, 4, 8], (Kind::Float, Device::Cpu)), None);
        let loss = stats.balance_loss.double_value(&[]);
        assert!((loss - 1.0).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn device_limited_routing_follows_the_device_of_the_best_expert() {
        // 4 devices of 2 experts, M = 1: device 1 holds the best expert (logit 3), so both
        // choices come from it, even expert 3 (logit -5). V3's node-limited scoring (sum of the
        // top two) would have kept group 0 instead (see the test above).
        let mut cfg = routing_config();
        (cfg.n_expert_groups, cfg.n_limited_groups) = (1, 1);
        (cfg.n_devices, cfg.n_limited_devices) = (4, 1);
        let logits = logits_weight(&[2.0, 2.0, 3.0, -5.0, 1.0, 1.0, -5.0, -5.0]);
        let (idx, _) = route(&gate_with(&cfg, &logits, &[0.0; 8]));
        assert_eq!(idx, vec![2, 3]);
        cfg.n_limited_devices = 2;
        let (idx, _) = route(&gate_with(&cfg, &logits, &[0.0; 8]));
        assert_eq!(
            idx,
            vec![0, 2],
            "devices 1 and 0 reachable: the best two experts"
        );
    }

    /// A router skewed toward experts 0 and 1 (device 0 of 4) with capacity factor 1: each device
    /// computes at most its share of the assignments, the highest-affinity ones; a token whose
    /// experts were all dropped gets only the shared experts (the block adds the residual), and
    /// an exempt sequence loses nothing.
    #[test]
    fn capacity_factor_drops_the_lowest_affinities_beyond_capacity() {
        let mut cfg = tiny_config();
        (cfg.n_expert_groups, cfg.n_limited_groups) = (1, 1);
        (cfg.n_devices, cfg.n_limited_devices) = (4, 4);
        cfg.score_func = ScoreFunc::Softmax;
        cfg.capacity_factor = 1.0;
        cfg.init_std = 0.1;
        tch::manual_seed(8);
        let (_vs, moe) = layer(&cfg);
        tch::no_grad(|| {
            let _ = moe.gate.weight.narrow(0, 0, 2).g_add_scalar_(0.05);
        });
        let (b, s, k) = (4, 8, cfg.n_activated_experts);
        let x = Tensor::randn([b, s, cfg.dim], (Kind::Float, Device::Cpu)) + 1.0;
        let flat = x.view([b * s, cfg.dim]);
        let r = moe.gate.forward(&flat);
        let idx = Vec::<Vec<i64>>::try_from(&r.indices).unwrap();
        let affinity = Vec::<Vec<f32>>::try_from(&r.scores.gather(1, &r.indices, false)).unwrap();
        let capacity = (b * s * k / 4) as usize;
        // Reference: per device, its assignments by decreasing affinity, the first `capacity` kept.
        let mut kept = vec![vec![false; k as usize]; (b * s) as usize];
        let mut expected_dropped = 0;
        for device in 0..4 {
            let mut on: Vec<(usize, usize)> = (0..idx.len())
                .flat_map(|t| (0..k as usize).map(move |j| (t, j)))
                .filter(|&(t, j)| idx[t][j] / 2 == device)
                .collect();
            on.sort_by(|a, b| affinity[b.0][b.1].total_cmp(&affinity[a.0][a.1]));
            on.iter()
                .take(capacity)
                .for_each(|&(t, j)| kept[t][j] = true);
            expected_dropped += on.len().saturating_sub(capacity);
        }
        assert!(
            expected_dropped > 0,
            "the router is not skewed enough to drop"
        );

        let none = Tensor::zeros([b], (Kind::Bool, Device::Cpu));
        let (y, stats) = tch::no_grad(|| moe.forward(&x, Some(&none)));
        assert_eq!(stats.dropped.int64_value(&[]), expected_dropped as i64);
        let y = y.view([b * s, cfg.dim]);
        let shared = moe.shared_experts.as_ref().unwrap();
        let mut fully_dropped = 0;
        for (t, chosen) in idx.iter().enumerate() {
            let token = flat.get(t as i64).unsqueeze(0);
            let reference = chosen.iter().enumerate().filter(|(j, _)| kept[t][*j]).fold(
                shared.forward(&token),
                |out, (j, &e)| {
                    let w = r.weights.get(t as i64).get(j as i64);
                    out + moe.experts[e as usize].forward(&token) * w
                },
            );
            fully_dropped += usize::from(kept[t].iter().all(|k| !k));
            let err = (y.get(t as i64) - reference.squeeze()).abs().max();
            assert!(err.double_value(&[]) < 1e-5, "token {t}");
        }
        assert!(fully_dropped > 0, "no token lost all its experts");

        let (undropped, stats) = tch::no_grad(|| moe.forward(&x, None));
        assert_eq!(
            stats.dropped.int64_value(&[]),
            0,
            "no dropping outside training"
        );
        let exempt = Tensor::from_slice(&[true, false, false, false]);
        let (y, _) = tch::no_grad(|| moe.forward(&x, Some(&exempt)));
        let err = (y.get(0) - undropped.get(0)).abs().max().double_value(&[]);
        assert!(err < 1e-6, "the exempt sequence lost assignments: {err}");
    }

    #[test]
    fn bias_update_moves_toward_balance_and_stays_zero_mean() {
        let mut bias = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        update_bias(&mut bias, &Tensor::from_slice(&[10i64, 0, 3, 3]), 0.001);
        let b = Vec::<f32>::try_from(&bias).unwrap();
        assert!(
            b[0] < 0.0 && b[1] > 0.0,
            "overloaded expert down, idle expert up: {b:?}"
        );
        assert!(b.iter().sum::<f32>().abs() < 1e-7);
    }

    #[test]
    fn bias_update_balances_a_skewed_router() {
        let mut cfg = tiny_config();
        cfg.n_expert_groups = 1;
        cfg.n_limited_groups = 1;
        cfg.init_std = 0.1; // tokens must differ in their affinities for balance to be reachable
        tch::manual_seed(6);
        let (_vs, mut moe) = layer(&cfg);
        tch::no_grad(|| {
            // Skew: experts 0 and 1 get a logit offset of ~3 along the mean direction of the inputs.
            let w = moe.gate.weight.shallow_clone();
            let _ = w.narrow(0, 0, 2).g_add_scalar_(0.05);
        });
        let x = Tensor::randn([8, 64, cfg.dim], (Kind::Float, Device::Cpu)) + 1.0;
        let imbalance = |moe: &Moe| {
            let (_, stats) = tch::no_grad(|| moe.forward(&x, None));
            let load = stats.load.to_kind(Kind::Float);
            (load.max() / load.mean(Kind::Float)).double_value(&[])
        };
        let before = imbalance(&moe);
        // A coarse γ to undo the skew fast, then a fine one to settle.
        for gamma in [0.01; 300].into_iter().chain([0.001; 200]) {
            let (_, stats) = tch::no_grad(|| moe.forward(&x, None));
            update_bias(&mut moe.gate.bias, &stats.load, gamma);
        }
        let after = imbalance(&moe);
        assert!(before > 3.0, "router not skewed: {before}");
        assert!(after < 1.3, "max/mean load {before} -> {after}");
    }
}
