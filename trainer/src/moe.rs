//! DeepSeekMoE (DeepSeek-V3 §2.1.2): always-on shared experts plus fine-grained routed experts.
//! The gate picks top-k experts per token by `affinity + bias` within the best groups, weights them
//! by the un-biased affinities, and the per-expert bias is nudged after each step toward balanced
//! load (auxiliary-loss-free balancing); a small sequence-wise balance loss complements it.

use tch::{nn, Device, Kind, Tensor};

use crate::config::{ModelConfig, ScoreFunc};
use crate::experts::{self, Dispatch, ExpertsPath};
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
    route_scale: f64,
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
        let mut choice = &scores + &self.bias;
        if self.n_groups > 1 {
            let n = choice.size()[0];
            let grouped = choice.view([n, self.n_groups, -1]);
            let group_scores =
                grouped
                    .topk(2, -1, true, false)
                    .0
                    .sum_dim_intlist(-1, false, Kind::Float);
            let kept = group_scores.topk(self.n_limited_groups, -1, true, false).1;
            let dropped = Tensor::ones([n, self.n_groups], (Kind::Bool, x.device()))
                .scatter_value(1, &kept, 0);
            choice = grouped
                .masked_fill(&dropped.unsqueeze(-1), f64::NEG_INFINITY)
                .view([n, -1]);
        }
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
    /// Sequence-wise balance loss Σ_i f_i·P_i, averaged over sequences (before α).
    pub balance_loss: Tensor,
}

#[derive(Debug)]
pub struct Moe {
    pub gate: Gate,
    pub experts: Vec<Mlp>,
    pub shared_experts: Option<Mlp>,
    /// How the routed experts run (`Auto` unless `Model::set_experts_path` chose).
    pub experts_path: ExpertsPath,
    n_experts: i64,
    top_k: i64,
}

impl Moe {
    pub fn new(path: nn::Path, cfg: &ModelConfig, precision: &Precision) -> Self {
        let (d, inter, std) = (cfg.dim, cfg.moe_inter_dim, cfg.init_std);
        let experts_path = &path / "experts";
        let experts = (0..cfg.n_routed_experts)
            .map(|i| Mlp::new(&experts_path / i, d, inter, std, precision))
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
        }
    }

    /// `x` of shape `[batch, seq, dim]`. Token copies are sorted by expert so that each expert runs
    /// on a contiguous slice (see `experts`), then weighted and scattered back with `index_add`.
    pub fn forward(&self, x: &Tensor) -> (Tensor, MoeStats) {
        let (b, s, d) = x.size3().expect("moe input must be [batch, seq, dim]");
        let flat = x.view([b * s, d]);
        let routing = self.gate.forward(&flat);
        let dispatch = Dispatch::new(&routing.indices, self.n_experts);
        let path = self
            .experts_path
            .resolve(x.device(), &self.experts[0].gate_proj.precision);
        let routed = experts::forward(path, &self.experts, &dispatch.gather(&flat), &dispatch);
        let y = dispatch.combine(&routed, &routing.weights, b * s);
        let load = dispatch.load;
        let y = match &self.shared_experts {
            Some(shared) => y + shared.forward(&flat),
            None => y,
        };
        let balance_loss = self.sequence_balance_loss(&routing, b, s, x.device());
        (y.view([b, s, d]), MoeStats { load, balance_loss })
    }

    /// Σ_i f_i·P_i per sequence with f_i = N_r/(K_r·T)·(tokens of the sequence sent to i) and
    /// P_i = mean over the sequence of s_i/Σ_j s_j; mean over the batch.
    fn sequence_balance_loss(&self, routing: &Routing, b: i64, s: i64, device: Device) -> Tensor {
        let scores = routing.scores.view([b, s, self.n_experts]);
        let probs = (&scores / scores.sum_dim_intlist(-1, true, Kind::Float)).mean_dim(
            1,
            false,
            Kind::Float,
        );
        let picks = routing.indices.view([b, s * self.top_k]);
        let counts = Tensor::zeros([b, self.n_experts], (Kind::Float, device)).scatter_add(
            1,
            &picks,
            &Tensor::ones([b, s * self.top_k], (Kind::Float, device)),
        );
        let f = counts * (self.n_experts as f64 / (self.top_k * s) as f64);
        (f * probs)
            .sum_dim_intlist(-1, false, Kind::Float)
            .mean(Kind::Float)
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
    use super::*;
    use crate::testing::tiny_config;

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
        let vs = nn::VarStore::new(Device::Cpu);
        let moe = Moe::new(vs.root() / "mlp", &cfg, &Precision::Fp32);
        let x = Tensor::randn([2, 9, cfg.dim], (Kind::Float, Device::Cpu));
        let (y, stats) = moe.forward(&x);
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
        let vs = nn::VarStore::new(Device::Cpu);
        let moe = Moe::new(vs.root() / "mlp", &cfg, &Precision::Fp32);
        tch::no_grad(|| {
            let _ = moe.gate.weight.shallow_clone().zero_();
        });
        // Equal scores: P_i = 1/8; ties route every token to the same 2 experts: f = 4 for those.
        let (_, stats) = moe.forward(&Tensor::ones([1, 4, 8], (Kind::Float, Device::Cpu)));
        let loss = stats.balance_loss.double_value(&[]);
        assert!((loss - 1.0).abs() < 1e-6, "{loss}");
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
        let vs = nn::VarStore::new(Device::Cpu);
        let mut moe = Moe::new(vs.root() / "mlp", &cfg, &Precision::Fp32);
        tch::no_grad(|| {
            // Skew: experts 0 and 1 get a logit offset of ~3 along the mean direction of the inputs.
            let w = moe.gate.weight.shallow_clone();
            let _ = w.narrow(0, 0, 2).g_add_scalar_(0.05);
        });
        let x = Tensor::randn([8, 64, cfg.dim], (Kind::Float, Device::Cpu)) + 1.0;
        let imbalance = |moe: &Moe| {
            let (_, stats) = tch::no_grad(|| moe.forward(&x));
            let load = stats.load.to_kind(Kind::Float);
            (load.max() / load.mean(Kind::Float)).double_value(&[])
        };
        let before = imbalance(&moe);
        // A coarse γ to undo the skew fast, then a fine one to settle.
        for gamma in [0.01; 300].into_iter().chain([0.001; 200]) {
            let (_, stats) = tch::no_grad(|| moe.forward(&x));
            update_bias(&mut moe.gate.bias, &stats.load, gamma);
        }
        let after = imbalance(&moe);
        assert!(before > 3.0, "router not skewed: {before}");
        assert!(after < 1.3, "max/mean load {before} -> {after}");
    }
}
