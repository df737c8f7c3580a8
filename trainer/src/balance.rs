//! The auxiliary balance losses of DeepSeekMoE, computed per sequence and averaged over the batch
//! (DeepSeek-V2 §2.2.3; V3 keeps the first as its small "sequence-wise" loss). With T tokens in a
//! sequence, N_r routed experts, K_r chosen per token, D devices of E_d = N_r / D experts each and
//! at most M devices per token:
//! - expert level: Σ_i f_i·P_i, f_i = N_r/(K_r·T)·#tokens sent to expert i, P_i = mean_t s_{i,t}
//!   (affinities normalized over the experts, a no-op for V2's softmax);
//! - device level: Σ_d f'_d·P'_d, f'_d = mean of f_i over the experts of d, P'_d = Σ P_i over them;
//! - communication: Σ_d f''_d·P''_d, f''_d = D/(M·T)·#tokens sent to device d, P''_d = P'_d.
//!
//! Each is 1 when routing is balanced (expert level: with uniform affinities), larger otherwise.

use tch::{Kind, Tensor};

/// The three losses of a batch, before their coefficients α1, α2, α3 (scalars, differentiable
/// through the affinities).
#[derive(Debug)]
pub struct BalanceLosses {
    pub expert: Tensor,
    pub device: Tensor,
    pub comm: Tensor,
}

/// Balance losses of `b` sequences from affinities `scores [b·T, N_r]` and the chosen experts
/// `indices [b·T, K_r]`, with the experts split over `n_devices` of which a token may reach
/// `limited_devices`.
pub fn balance_losses(
    scores: &Tensor,
    indices: &Tensor,
    b: i64,
    n_devices: i64,
    limited_devices: i64,
) -> BalanceLosses {
    let (_, n_experts) = scores.size2().expect("scores must be [tokens, experts]");
    let top_k = indices.size()[1];
    let t = scores.size()[0] / b;
    let per_device = n_experts / n_devices;
    let scores = scores.view([b, t, n_experts]);
    // P_i per sequence [b, N_r].
    let p =
        (&scores / scores.sum_dim_intlist(-1, true, Kind::Float)).mean_dim(1, false, Kind::Float);
    let picks = indices.view([b, t * top_k]);
    let ones = picks.ones_like().to_kind(Kind::Float);
    let counts = p.zeros_like().scatter_add(1, &picks, &ones);
    let f = counts * (n_experts as f64 / (top_k * t) as f64);
    let per_seq = |x: Tensor| x.sum_dim_intlist(-1, false, Kind::Float).mean(Kind::Float);
    let expert = per_seq(&f * &p);

    let device_p = p
        .view([b, n_devices, per_device])
        .sum_dim_intlist(-1, false, Kind::Float);
    let device_f = f
        .view([b, n_devices, per_device])
        .mean_dim(-1, false, Kind::Float);
    let device = per_seq(device_f * &device_p);

    // A token is sent to a device once however many of its experts live there.
    let device_of = indices.view([b, t, top_k]).floor_divide_scalar(per_device);
    let reached = Tensor::zeros([b, t, n_devices], (Kind::Float, scores.device()))
        .scatter_value(2, &device_of, 1.0);
    let tokens_per_device = reached.sum_dim_intlist(1, false, Kind::Float);
    let comm_f = tokens_per_device * (n_devices as f64 / (limited_devices * t) as f64);
    let comm = per_seq(comm_f * device_p);
    BalanceLosses {
        expert,
        device,
        comm,
    }
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;

    /// One sequence of 2 tokens, 4 experts on 2 devices ({0, 1}, {2, 3}), top-2, M = 2:
    ///   token 0: affinities [0.4, 0.3, 0.2, 0.1], chooses experts 0 and 1 (device 0 only);
    ///   token 1: affinities [0.5, 0.1, 0.3, 0.1], chooses experts 0 and 2 (both devices).
    /// f = 4/(2·2)·[2, 1, 1, 0] = [2, 1, 1, 0], P = [0.45, 0.2, 0.25, 0.1]:
    ///   expert = 2·0.45 + 1·0.2 + 1·0.25 + 0·0.1            = 1.35
    ///   f' = [1.5, 0.5], P' = [0.65, 0.35]: device = 1.5·0.65 + 0.5·0.35 = 1.15
    ///   tokens per device [2, 1], f'' = 2/(2·2)·[2, 1] = [1, 0.5]: comm = 0.65 + 0.175 = 0.825
    #[test]
    fn match_the_hand_computed_values() {
        let scores = Tensor::from_slice(&[0.4f32, 0.3, 0.2, 0.1, 0.5, 0.1, 0.3, 0.1]).view([2, 4]);
        let indices = Tensor::from_slice(&[0i64, 1, 0, 2]).view([2, 2]);
        let l = balance_losses(&scores, &indices, 1, 2, 2);
        for (name, got, want) in [
            ("expert", &l.expert, 1.35),
            ("device", &l.device, 1.15),
            ("comm", &l.comm, 0.825),
        ] {
            let got = got.double_value(&[]);
            assert!((got - want).abs() < 1e-6, "{name}: {got} vs {want}");
        }
    }

    /// Perfectly balanced routing with uniform affinities scores 1 on all three, and a batch is
    /// the mean of its sequences.
    #[test]
    fn balanced_routing_scores_one_and_batches_average() {
        // 2 tokens, 4 experts on 2 devices, top-2: the tokens use disjoint devices.
        let uniform = Tensor::full([2, 4], 0.25, (Kind::Float, Device::Cpu));
        let balanced = Tensor::from_slice(&[0i64, 1, 2, 3]).view([2, 2]);
        let l = balance_losses(&uniform, &balanced, 1, 2, 1);
        for t in [&l.expert, &l.device, &l.comm] {
            assert!((t.double_value(&[]) - 1.0).abs() < 1e-6, "{t}");
        }
        let scores = Tensor::from_slice(&[0.4f32, 0.3, 0.2, 0.1, 0.5, 0.1, 0.3, 0.1]).view([2, 4]);
        let skewed = Tensor::from_slice(&[0i64, 1, 0, 2]).view([2, 2]);
        let both = balance_losses(
            &Tensor::cat(&[&scores, &uniform], 0),
            &Tensor::cat(&[&skewed, &balanced], 0),
            2,
            2,
            2,
        );
        let expected = (1.35 + 1.0) / 2.0;
        assert!((both.expert.double_value(&[]) - expected).abs() < 1e-6);
    }
}
