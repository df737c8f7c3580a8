//! Token dropping with a capacity factor (DeepSeek-V2 §3.1.2, "Token-Dropping Strategy"): during
//! training each device computes at most capacity_factor × its balanced share of the
//! token-to-expert assignments of a micro-batch, N·K_r/D; beyond that it drops the assignments of
//! lowest affinity, whose tokens then get nothing from that expert and pass through the residual
//! connection. Assignments of about 10% of the sequences are never dropped, so the model also
//! trains on undropped routing (which inference uses).

use tch::{Kind, Tensor};

use crate::experts::tally;

/// Sequences exempt from dropping: those whose token ids sum to a multiple of 10 — about 10%,
/// decided by their content alone, so the same sequence is exempt on any rank, micro-batch or
/// position. `tokens [b, s]` → `[b]` bool.
pub fn exempt_sequences(tokens: &Tensor) -> Tensor {
    tokens
        .sum_dim_intlist(1, false, Kind::Int64)
        .remainder(10)
        .eq(0)
}

/// Indices into the N·K_r assignments (token-major, as `Routing::indices.view([-1])`) that are
/// computed, in increasing order: on each device, exempt assignments first, then by decreasing
/// `affinity`, at most ceil(capacity_factor·N·K_r / D) — exempt ones are kept even beyond that.
pub fn kept_assignments(
    expert_of: &Tensor,
    affinity: &Tensor,
    exempt: &Tensor,
    n_devices: i64,
    experts_per_device: i64,
    capacity_factor: f64,
) -> Tensor {
    let n = expert_of.size()[0];
    let capacity = (capacity_factor * n as f64 / n_devices as f64).ceil() as i64;
    let device = expert_of.floor_divide_scalar(experts_per_device);
    // Affinities lie in [0, 1]: adding 2 ranks every exempt assignment first.
    let priority = affinity.detach().to_kind(Kind::Float) + exempt.to_kind(Kind::Float) * 2.0;
    let (_, by_priority) = priority.sort_stable(true, 0, true);
    let (_, by_device) = device
        .index_select(0, &by_priority)
        .sort_stable(true, 0, false);
    let order = by_priority.index_select(0, &by_device);
    let per_device = tally(&device, n_devices);
    let first_of_device = per_device.cumsum(0, Kind::Int64) - &per_device;
    let rank = Tensor::arange(n, (Kind::Int64, expert_of.device()))
        - first_of_device.index_select(0, &device.index_select(0, &order));
    let keep = rank
        .lt(capacity)
        .logical_or(&exempt.index_select(0, &order));
    order.masked_select(&keep).sort(0, false).0
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;

    #[test]
    fn each_device_keeps_its_best_assignments_up_to_capacity() {
        // 6 assignments on 2 devices of 2 experts; capacity ceil(1.0·6/2) = 3 per device.
        // Device 0 gets 5 (affinities .9 .1 .5 .7 .3), device 1 gets 1.
        let expert_of = Tensor::from_slice(&[0i64, 1, 0, 1, 0, 2]);
        let affinity = Tensor::from_slice(&[0.9f32, 0.1, 0.5, 0.7, 0.3, 0.2]);
        let none = Tensor::zeros([6], (Kind::Bool, Device::Cpu));
        let kept = kept_assignments(&expert_of, &affinity, &none, 2, 2, 1.0);
        assert_eq!(Vec::<i64>::try_from(&kept).unwrap(), vec![0, 2, 3, 5]);
        // Assignment 1 (affinity .1) is exempt: kept beyond the capacity.
        let exempt = Tensor::from_slice(&[false, true, false, false, false, false]);
        let kept = kept_assignments(&expert_of, &affinity, &exempt, 2, 2, 1.0);
        assert_eq!(Vec::<i64>::try_from(&kept).unwrap(), vec![0, 1, 3, 5]);
        // A larger factor keeps everything.
        let kept = kept_assignments(&expert_of, &affinity, &none, 2, 2, 2.0);
        assert_eq!(kept.size(), vec![6]);
    }

    #[test]
    fn about_a_tenth_of_sequences_are_exempt() {
        tch::manual_seed(0);
        let tokens = Tensor::randint(100_000, [2000, 64], (Kind::Int64, Device::Cpu));
        let share = exempt_sequences(&tokens)
            .to_kind(Kind::Float)
            .mean(Kind::Float);
        let share = share.double_value(&[]);
        assert!((0.08..0.12).contains(&share), "{share}");
    }
}
