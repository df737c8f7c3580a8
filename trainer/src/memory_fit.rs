//! Whether a training run fits in memory. Before anything is allocated: the least each rank must
//! hold whatever the batch (the FP32 master weights, their FP32 gradients and the two AdamW
//! moments, counted from the configs alone with the counts of `info`), so that a model that
//! cannot fit is refused at once, saying what to change, instead of being killed by the kernel's
//! OOM killer a minute into a CPU run or failing in the first CUDA step. During a step: an
//! allocation that fails (activations) ends the run with libtorch's one-line reason and what to
//! lower, not a panic and a page of C++ frames.

use anyhow::{bail, Result};
use tch::Device;

use crate::config::ModelConfig;
use crate::expert_parallel::ExpertLayout;
use crate::info::model_info;
use crate::optim::{Moments, OptimConfig};

/// Bytes one rank holds for the model's state, activations aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryFloor {
    /// FP32 master weights: the shared parameters and this rank's routed experts.
    pub weights: u64,
    /// Their FP32 gradients.
    pub gradients: u64,
    /// The AdamW moments: with ZeRO-1 those of the parameters every rank holds are divided over
    /// the ranks.
    pub moments: u64,
}

impl MemoryFloor {
    /// The floor of one rank of `layout` training `model` with `optim` and ZeRO stage `zero`.
    pub fn of(model: &ModelConfig, optim: &OptimConfig, zero: u8, layout: &ExpertLayout) -> Self {
        let info = model_info(model, 1);
        let all = info.total_params + info.mtp_params;
        // With expert parallelism a rank holds 1/E of the routed experts, whose state stays whole
        // on their holders; everything else (without it, the experts too) is held by every rank
        // and has its moments sharded by ZeRO-1.
        let (everywhere, experts) = match layout.ep {
            1 => (all, 0),
            ep => (
                all - info.routed_expert_params,
                info.routed_expert_params / ep as u64,
            ),
        };
        let params = everywhere + experts;
        let sharded = match zero {
            1 => everywhere.div_ceil(layout.world as u64),
            _ => everywhere,
        };
        let moment = match optim.moments {
            Moments::Fp32 => 4,
            Moments::Bf16 => 2,
        };
        Self {
            weights: 4 * params,
            gradients: 4 * params,
            moments: 2 * moment * (sharded + experts),
        }
    }

    pub fn total(&self) -> u64 {
        self.weights + self.gradients + self.moments
    }
}

/// `bytes` in MiB, GiB or TiB, whichever reads best.
fn readable(bytes: u64) -> String {
    let mib = bytes as f64 / (1u64 << 20) as f64;
    match mib {
        m if m >= 1024.0 * 1024.0 => format!("{:.1} TiB", m / (1024.0 * 1024.0)),
        m if m >= 1024.0 => format!("{:.1} GiB", m / 1024.0),
        m => format!("{m:.1} MiB"),
    }
}

/// Host memory a process may still get: available memory and free swap (Linux), if known.
fn host_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some(field("MemAvailable:")? + field("SwapFree:").unwrap_or(0))
}

/// Fails when `local_ranks` ranks of `floor` cannot fit on `device`: a GPU holds one rank, host
/// memory the ranks of this machine. Where the capacity cannot be read it passes.
pub fn ensure_fits(
    floor: &MemoryFloor,
    model: &str,
    device: Device,
    local_ranks: usize,
) -> Result<()> {
    let (need, have, place) = match device {
        // A build without the CUDA headers cannot read the size: the run goes ahead unchecked.
        Device::Cuda(_) => match crate::cuda_info::total_memory(device) {
            Ok(have) => (floor.total(), have, "the GPU's memory".to_string()),
            Err(_) => return Ok(()),
        },
        _ => match host_available() {
            Some(have) => (
                floor.total() * local_ranks as u64,
                have,
                format!("this machine's available memory ({local_ranks} rank(s) here)"),
            ),
            None => return Ok(()),
        },
    };
    if need > have {
        bail!(
            "{model} cannot fit: each rank needs at least {} before activations (FP32 weights {}, \
             gradients {}, AdamW moments {}), {} in all against {} of {place}. Divide it over more \
             ranks: [distributed] zero = 1 shards the moments, expert_parallel = E splits the \
             routed experts; [optim] moments = \"bf16\" halves the moments; or train a smaller \
             --model",
            readable(floor.total()),
            readable(floor.weights),
            readable(floor.gradients),
            readable(floor.moments),
            readable(need),
            readable(have)
        );
    }
    Ok(())
}

/// The one-line reason of a libtorch allocation failure found in `message` (a tch error or the
/// panic of an unwrapped one, with its C++ frames), if it is one: CUDA's "CUDA out of memory.
/// Tried to allocate …" or the CPU allocator's "can't allocate memory: you tried to allocate …".
pub fn out_of_memory(message: &str) -> Option<&str> {
    let start = [
        "CUDA out of memory",
        "DefaultCPUAllocator: can't allocate memory",
    ]
    .iter()
    .find_map(|what| message.find(what))?;
    let reason = &message[start..];
    // Up to the first line break, escaped (a panic quotes the error with `{:?}`) or not.
    let end = ["\\n", "\n", "\""]
        .iter()
        .filter_map(|stop| reason.find(stop))
        .min()
        .unwrap_or(reason.len());
    Some(reason[..end].trim_end())
}

/// The text of a panic's payload (what `panic!` and `unwrap` put there).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
}

/// Keeps the panic hook from printing panics that `out_of_memory` explains: the run reports them
/// as an error instead (installed once; other panics print as before).
pub fn quiet_out_of_memory_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if panic_text(info.payload()).and_then(out_of_memory).is_none() {
                default(info)
            }
        }));
    });
}

/// The error for a step that ran out of memory: libtorch's `reason`, and what to lower.
pub fn step_out_of_memory(
    reason: &str,
    step: u64,
    micro_batch: u64,
    seq_len: i64,
    floor: &MemoryFloor,
) -> anyhow::Error {
    anyhow::anyhow!(
        "out of memory in step {step}: {reason}. Activations grow with micro_batch × seq_len \
         ({micro_batch} × {seq_len} tokens per forward here): lower micro_batch in the train \
         config (the global batch stays, reached by more accumulation) or seq_len. Weights, \
         gradients and AdamW moments take {} per rank besides ([distributed] zero = 1 or \
         expert_parallel divide them)",
        readable(floor.total())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linear::Precision;
    use crate::model::Model;
    use crate::testing::{repo_config, tiny_config};

    /// The floor counts what the trainer allocates: the model's trainable parameters, in FP32
    /// (DeepSeek-V2's routing and DeepSeek LLM's dense layers too).
    #[test]
    fn the_floor_counts_the_models_parameters() {
        for name in ["tiny", "tiny-v2", "tiny-dense"] {
            let model = repo_config(name);
            let floor =
                MemoryFloor::of(&model, &OptimConfig::default(), 0, &ExpertLayout::single());
            let vs = tch::nn::VarStore::new(Device::Cpu);
            let _model = Model::new(&vs.root(), &model, &Precision::Fp32);
            let numel: u64 = vs
                .trainable_variables()
                .iter()
                .map(|t| t.numel() as u64)
                .sum();
            assert_eq!(floor.weights, 4 * numel, "{name}");
            assert_eq!(floor.gradients, 4 * numel, "{name}");
            assert_eq!(floor.moments, 8 * numel, "{name}");
        }
    }

    /// ZeRO-1 divides the shared parameters' moments over the ranks, expert parallelism the
    /// routed experts' weights, gradients and moments; BF16 moments halve them.
    #[test]
    fn sharding_lowers_the_floor() {
        let model = tiny_config();
        let routed = model_info(&model, 1).routed_expert_params;
        let single = MemoryFloor::of(&model, &OptimConfig::default(), 0, &ExpertLayout::single());
        let layout = ExpertLayout::new(2, 0, 4, &model).unwrap();
        let split = MemoryFloor::of(&model, &OptimConfig::default(), 0, &layout);
        assert_eq!(single.weights - split.weights, 4 * routed / 2);
        let zero1 = MemoryFloor::of(&model, &OptimConfig::default(), 1, &layout);
        let shared = single.weights / 4 - routed;
        assert_eq!(zero1.moments, 8 * (shared.div_ceil(4) + routed / 2));
        // Without expert parallelism ZeRO-1 shards the experts' moments with the rest.
        let layout = ExpertLayout::new(1, 0, 4, &model).unwrap();
        let zero1 = MemoryFloor::of(&model, &OptimConfig::default(), 1, &layout);
        assert_eq!(zero1.weights, single.weights);
        assert_eq!(zero1.moments, 8 * (single.weights / 4).div_ceil(4));
        let bf16 = OptimConfig {
            moments: Moments::Bf16,
            ..OptimConfig::default()
        };
        assert_eq!(
            MemoryFloor::of(&model, &bf16, 1, &layout).moments,
            zero1.moments / 2
        );
    }

    /// The one-line reasons of real libtorch failures: a CPU allocation's panic, as tch's unwrap
    /// quotes it, and CUDA's error.
    #[test]
    fn allocation_failures_are_recognised() {
        let cpu = "called `Result::unwrap()` on an `Err` value: Torch(\"[enforce fail at \
                   alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you \
                   tried to allocate 1073741824 bytes. Error code 12 (Cannot allocate memory)\\n\
                   frame #0: c10::ThrowEnforceNotMet(char const*, int) + 0x6a\")";
        assert_eq!(
            out_of_memory(cpu),
            Some(
                "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1073741824 \
                 bytes. Error code 12 (Cannot allocate memory)"
            )
        );
        let cuda = "CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity \
                    of 79.10 GiB of which 1.56 MiB is free.\nException raised from malloc at \
                    CUDACachingAllocator.cpp:1000";
        assert_eq!(
            out_of_memory(cuda),
            Some(
                "CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of \
                 79.10 GiB of which 1.56 MiB is free."
            )
        );
        assert_eq!(out_of_memory("shape mismatch: [2, 3] vs [3, 2]"), None);
    }

    /// DeepSeek-V3 on one CPU process is refused before anything is allocated, with the numbers
    /// and what to change.
    #[test]
    fn a_model_too_large_for_the_host_is_refused() {
        let model = repo_config("deepseek-v3");
        let floor = MemoryFloor::of(&model, &OptimConfig::default(), 0, &ExpertLayout::single());
        assert!(floor.total() > 9 << 40, "671B parameters × 16 bytes");
        let err = ensure_fits(&floor, "deepseek-v3", Device::Cpu, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("deepseek-v3 cannot fit"), "{err}");
        assert!(
            err.contains("zero = 1") && err.contains("expert_parallel"),
            "{err}"
        );
        ensure_fits(
            &MemoryFloor::of(
                &tiny_config(),
                &OptimConfig::default(),
                0,
                &ExpertLayout::single(),
            ),
            "tiny",
            Device::Cpu,
            1,
        )
        .unwrap();
    }
}
