//! `whale-train check`: the device kernels against their reference paths, on whatever device is
//! given, each as one JSON object. scripts/gpu-check runs them on a GPU (CUDA paths no CPU test
//! reaches: native FP8 `_scaled_mm`, `_grouped_mm` experts in BF16, NCCL); on CPU they run the
//! same code, where the device-only half reports that it is unavailable.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use tch::{nn, Device, Kind, Tensor};

use crate::config::ModelConfig;
use crate::data::Synthetic;
use crate::dist::{Backend, Placement, ProcessGroup, ReduceOp};
use crate::expert_parallel::ExpertLayout;
use crate::experts::{self, Dispatch, ExpertsPath};
use crate::fp8::quant::{quantize, Granularity};
use crate::fp8::{self, ScaleMode};
use crate::linear::Precision;
use crate::mla::{causal_attention, sdp_backend, PadValues};
use crate::mlp::Mlp;
use crate::optim::release_grads;
use crate::train::{Recompute, TrainConfig, Trainer};

/// Waits for the device's queued work (a no-op on CPU), so host clocks time the kernels.
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Median milliseconds of `runs` calls of `f` after two warm-up calls.
fn median_ms(device: Device, runs: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..2 {
        f();
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            sync(device);
            let t = Instant::now();
            f();
            sync(device);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

/// ‖a − b‖ / ‖b‖ in FP32.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Float), b.to_kind(Kind::Float));
    ((&a - &b).norm() / b.norm().clamp_min(1e-30)).double_value(&[])
}

/// One FP8 GEMM `[m, k] · [n, k]ᵀ` with DeepSeek's scales (1×128 tiles, 128×128 blocks): the
/// emulation against FP32 on the unquantized inputs (E4M3's own error), native `_scaled_mm`
/// against the emulation (same quantized operands, so only the summation order may differ) and
/// the times of both and of a plain BF16 GEMM of the same shape.
pub fn fp8_gemm(device: Device, m: i64, k: i64, n: i64, runs: usize) -> Result<Value> {
    let opts = (Kind::Float, device);
    let (x, w) = (Tensor::randn([m, k], opts), Tensor::randn([n, k], opts));
    let a = quantize(&x, Granularity::Tile, ScaleMode::Exact)?;
    let b = quantize(&w, Granularity::Block, ScaleMode::Exact)?;
    let exact = x.matmul(&w.tr());
    let emulated = fp8::Backend::Emulated.gemm(&a, &b)?;
    let tflops = |ms: f64| 2.0 * (m * k * n) as f64 / (ms * 1e-3) / 1e12;
    let (xb, wb) = (x.to_kind(Kind::BFloat16), w.to_kind(Kind::BFloat16));
    let bf16_ms = median_ms(device, runs, || {
        let _ = xb.matmul(&wb.tr());
    });
    let emulated_ms = median_ms(device, runs, || {
        let _ = fp8::Backend::Emulated.gemm(&a, &b);
    });
    let native = match fp8::select(fp8::BackendChoice::Native, device) {
        Ok(_) => {
            let out = fp8::Backend::Native.gemm(&a, &b)?;
            let ms = median_ms(device, runs, || {
                let _ = fp8::Backend::Native.gemm(&a, &b);
            });
            json!({
                "rel_err_vs_emulated": rel_err(&out, &emulated),
                "max_abs_err_vs_emulated": (&out - &emulated).abs().max().double_value(&[]),
                "ms": ms,
                "tflops": tflops(ms),
                "speedup_vs_bf16": bf16_ms / ms,
            })
        }
        Err(e) => json!({ "unavailable": format!("{e:#}") }),
    };
    Ok(json!({
        "check": "fp8-gemm",
        "device": format!("{device:?}"),
        "shape": [m, k, n],
        // E4M3 keeps 3 mantissa bits: each operand is off by up to 2^-4 relative, ~2^-5 on average.
        "emulated_rel_err_vs_fp32": rel_err(&emulated, &exact),
        "bf16": { "ms": bf16_ms, "tflops": tflops(bf16_ms) },
        "emulated": { "ms": emulated_ms, "tflops": tflops(emulated_ms) },
        "native": native,
    }))
}

/// An MoE layer's routed experts of `cfg`'s shape on `tokens` tokens: the grouped GEMMs against
/// the per-expert loop under BF16 autocast (as training runs them), in outputs and in the
/// gradients of the input and of every expert weight, and the time of forward + backward.
/// Expert 0 is left without tokens, the case grouped GEMMs must handle.
pub fn experts(device: Device, cfg: &ModelConfig, tokens: i64, runs: usize) -> Result<Value> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let n = cfg.n_routed_experts;
    let list: Vec<Mlp> = (0..n)
        .map(|i| {
            let path = vs.root() / i;
            Mlp::new(path, cfg.dim, cfg.moe_inter_dim, 0.02, &Precision::Fp32)
        })
        .collect();
    // k distinct experts per token among 1..n, uniformly.
    let scores = Tensor::rand([tokens, n - 1], (Kind::Float, device));
    let indices = scores.topk(cfg.n_activated_experts, -1, true, false).1 + 1;
    let dispatch = Dispatch::new(&indices.to_kind(Kind::Int64), n, None);
    let x0 = Tensor::randn([tokens, cfg.dim], (Kind::Float, device));
    let probe = Tensor::randn(
        [tokens * cfg.n_activated_experts, cfg.dim],
        (Kind::Float, device),
    );
    let (y_loop, g_loop) = experts_pass(ExpertsPath::Loop, &list, &x0, &dispatch, &probe, true);
    let (y_grouped, g_grouped) =
        experts_pass(ExpertsPath::Grouped, &list, &x0, &dispatch, &probe, true);
    let idle = g_grouped
        .narrow(0, tokens * cfg.dim, 3 * cfg.dim * cfg.moe_inter_dim)
        .abs()
        .max()
        .double_value(&[]);
    let time = |path| {
        median_ms(device, runs, || {
            let _ = experts_pass(path, &list, &x0, &dispatch, &probe, true);
        })
    };
    let (loop_ms, grouped_ms) = (time(ExpertsPath::Loop), time(ExpertsPath::Grouped));
    Ok(json!({
        "check": "experts",
        "device": format!("{device:?}"),
        "tokens": tokens, "experts": n, "top_k": cfg.n_activated_experts,
        "dim": cfg.dim, "inter": cfg.moe_inter_dim,
        "output_rel_err": rel_err(&y_grouped, &y_loop),
        "grad_rel_err": rel_err(&g_grouped, &g_loop),
        "idle_expert_grad_max": idle,
        "loop_ms": loop_ms,
        "grouped_ms": grouped_ms,
        "grouped_speedup": loop_ms / grouped_ms,
    }))
}

/// The name of a fused-attention kernel by its `SDPBackend` number.
fn backend_name(backend: i64) -> &'static str {
    match backend {
        0 => "math",
        1 => "flash",
        2 => "efficient",
        3 => "cudnn",
        4 => "overrideable",
        _ => "none",
    }
}

/// The causal attention of `cfg`'s MLA in training (`batch` sequences of `seq` tokens, BF16 on
/// CUDA, FP32 on CPU): SDPA on the values as they are against the values zero-padded to the
/// query's head dim (`causal_attention`'s two ways; training pads when that gets FlashAttention
/// and the plain values do not): the kernel libtorch picks for each,
/// their agreement in the output and in the gradients of q, k and v, and forward + backward time
/// (TFLOP/s counted on the unpadded dims, causal: 3.5 · b·h·s²·(qk + v)).
pub fn attention(
    device: Device,
    cfg: &ModelConfig,
    batch: i64,
    seq: i64,
    runs: usize,
) -> Result<Value> {
    tch::manual_seed(0);
    let kind = if device.is_cuda() {
        Kind::BFloat16
    } else {
        Kind::Float
    };
    let heads = cfg.n_heads;
    let qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim;
    let v_head = cfg.v_head_dim;
    let scale = cfg.softmax_scale();
    let input = |d: i64| Tensor::randn([batch, heads, seq, d], (kind, device));
    let (q, k, v) = (input(qk), input(qk), input(v_head));
    let probe = Tensor::randn([batch, heads, seq, v_head], (Kind::Float, device));
    let pass = |pad: PadValues| {
        let [q, k, v] = [&q, &k, &v].map(|t| t.copy().set_requires_grad(true));
        let out = causal_attention(&q, &k, &v, scale, pad);
        (out.to_kind(Kind::Float) * &probe)
            .sum(Kind::Float)
            .backward();
        let grads: Vec<Tensor> = [&q, &k, &v].iter().map(|t| t.grad().view([-1])).collect();
        (out.detach(), Tensor::cat(&grads, 0))
    };
    let (out, grads) = pass(PadValues::Never);
    let (out_padded, grads_padded) = pass(PadValues::Always);
    let flops = 3.5 * (batch * heads) as f64 * (seq * seq) as f64 * (qk + v_head) as f64;
    let ms = |pad| {
        median_ms(device, runs, || {
            let _ = pass(pad);
        })
    };
    let (plain_ms, padded_ms) = (ms(PadValues::Never), ms(PadValues::Always));
    let timing = |ms: f64| json!({ "ms": ms, "tflops": flops / (ms * 1e-3) / 1e12 });
    Ok(json!({
        "check": "attention",
        "device": format!("{device:?}"),
        "dtype": format!("{kind:?}"),
        "batch": batch, "seq": seq, "heads": heads, "qk_head_dim": qk, "v_head_dim": v_head,
        "backend": backend_name(sdp_backend(&q, &k, &v, scale)),
        "padded_backend": backend_name(sdp_backend(&q, &k, &q, scale)),
        "training_pads": PadValues::Auto.applies(&q, &k, &v, scale),
        "padded_output_rel_err": rel_err(&out_padded, &out),
        "padded_grad_rel_err": rel_err(&grads_padded, &grads),
        "plain": timing(plain_ms),
        "padded": timing(padded_ms),
        "padded_speedup": plain_ms / padded_ms,
    }))
}

/// One forward and backward pass of `experts` along `path` over the copies of `x0` that
/// `dispatch` sorts, with `probe` as the output's gradient, under BF16 autocast when `bf16`: the
/// output, and every gradient in one flat vector (the input's, then each expert's gate, up and
/// down weights'; zeros for an expert without tokens).
pub fn experts_pass(
    path: ExpertsPath,
    experts: &[Mlp],
    x0: &Tensor,
    dispatch: &Dispatch,
    probe: &Tensor,
    bf16: bool,
) -> (Tensor, Tensor) {
    let weights: Vec<&Tensor> = experts
        .iter()
        .flat_map(|e| [&e.gate_proj.weight, &e.up_proj.weight, &e.down_proj.weight])
        .collect();
    release_grads(weights.iter().copied());
    let x = x0.copy().set_requires_grad(true);
    let y = crate::autocast::bf16(x0.device(), bf16, || {
        experts::forward(path, experts, &dispatch.gather(&x), &dispatch.load)
    });
    (&y.to_kind(Kind::Float) * probe)
        .sum(Kind::Float)
        .backward();
    let grads: Vec<Tensor> = std::iter::once(x.grad())
        .chain(weights.iter().map(|w| match w.grad() {
            g if g.defined() => g,
            _ => w.zeros_like(),
        }))
        .map(|g| g.reshape([-1]))
        .collect();
    (y.detach(), Tensor::cat(&grads, 0))
}

/// A one-rank process group on this device's backend (NCCL on CUDA, Gloo on CPU): each
/// collective data parallelism uses on a known tensor, then `steps` training steps of `model`
/// through the data-parallel plan over that group, against the same steps of one process without a
/// group: with ZeRO-0 (each gradient bucket all-reduced from the hooks during the backward; the
/// blocks recomputed in the backward, whose re-entrant backward also feeds the buckets) and
/// with ZeRO-1 (each bucket reduce-scattered from the hooks, the weights all-gathered in rounds of
/// `bucket_mb`). One rank's collectives and the recomputation change nothing, so the losses must
/// agree: a bucket or round read before its collective has written it (a stream-ordering fault,
/// which only a GPU can show) scrambles the weights and fails the check.
pub fn process_group(
    device: Device,
    model: &ModelConfig,
    train: TrainConfig,
    steps: usize,
) -> Result<Value> {
    let backend = if device.is_cuda() {
        Backend::Nccl
    } else {
        Backend::Gloo
    };
    let timeout = Duration::from_secs(120);
    let place = Placement::local(0, 1, crate::dist::placement::free_port()?);
    let started = Instant::now();
    let group = ProcessGroup::join(&place, backend, timeout)?;
    let t = Tensor::arange(8, (Kind::Float, device));
    group.all_reduce(&t, ReduceOp::Sum)?.wait()?;
    group.all_reduce(&t, ReduceOp::Avg)?.wait()?;
    group.broadcast(&t, 0)?.wait()?;
    let gathered = t.new_zeros([8], (Kind::Float, device));
    group.all_gather(&gathered, &t)?.wait()?;
    let scattered = t.new_zeros([8], (Kind::Float, device));
    group.reduce_scatter(&scattered, &gathered)?.wait()?;
    group.barrier()?;
    let expected = Vec::<f32>::try_from(&Tensor::arange(8, (Kind::Float, Device::Cpu)))?;
    for (what, got) in [
        ("all-reduce", &t),
        ("all-gather", &gathered),
        ("reduce-scatter", &scattered),
    ] {
        ensure!(
            Vec::<f32>::try_from(&got.to_device(Device::Cpu))? == expected,
            "{backend:?} {what} of one rank changed the tensor"
        );
    }
    let collectives_ms = started.elapsed().as_secs_f64() * 1e3;
    // Progress on stderr as it happens: a group that hangs on teardown still leaves its results.
    eprintln!("process-group: {backend:?} collectives of one rank ok in {collectives_ms:.0} ms");

    let new_trainer = |zero: u8, recompute: Recompute| {
        let mut train = train.clone();
        train.distributed.zero = zero;
        train.recompute = recompute;
        // NCCL's default for ZeRO-1, chosen on Gloo too: the CPU run walks the GPU's path.
        train.distributed.reduce_scatter = (zero == 1).then_some(true);
        Trainer::new(
            model,
            train,
            device,
            &Precision::Bf16,
            true,
            ExpertLayout::single(),
        )
    };
    let run = |trainer: &mut Trainer, what: &str| {
        let mut data = Synthetic {
            vocab_size: model.vocab_size as u32,
            window: (train.seq_len + 1 + model.mtp_depth) as usize,
            batch_size: train.micro_batch as usize,
            seed: train.seed,
            batches: 0,
            slice: (0, 1),
        };
        (0..steps)
            .map(|_| {
                let m = trainer.train_step(&mut data)?;
                eprintln!(
                    "process-group: {what} step {} main loss {:.4}",
                    m.step, m.main_loss
                );
                Ok(m.main_loss)
            })
            .collect::<Result<Vec<f64>>>()
    };
    let mut reference = new_trainer(0, Recompute::None)?;
    let mut grouped = [
        new_trainer(0, Recompute::Block)?,
        new_trainer(1, Recompute::None)?,
    ];
    for trainer in &mut grouped {
        trainer.copy_weights_from(&reference)?;
    }
    let alone = run(&mut reference, "one process")?;
    drop(reference);
    let [mut zero0, mut zero1] = grouped;
    zero0.distribute(group.subgroup("zero0", &[0])?)?;
    let zero0_losses = run(&mut zero0, "ZeRO-0 group (blocks recomputed)")?;
    drop(zero0);
    zero1.distribute(group)?;
    let losses = run(&mut zero1, "ZeRO-1 group")?;
    let rel_diff = |losses: &[f64]| {
        alone
            .iter()
            .zip(losses)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1e-9))
            .fold(0.0, f64::max)
    };
    let (zero0_rel_diff, zero1_rel_diff) = (rel_diff(&zero0_losses), rel_diff(&losses));
    for (zero, diff, losses) in [
        (0, zero0_rel_diff, &zero0_losses),
        (1, zero1_rel_diff, &losses),
    ] {
        ensure!(
            diff < 1e-2,
            "{backend:?}: ZeRO-{zero} training over a one-rank group{} diverged from one process \
             (losses {losses:?} vs {alone:?}): the data-parallel step corrupts the weights on \
             this device",
            if zero == 0 {
                " with the blocks recomputed"
            } else {
                ""
            }
        );
    }
    Ok(json!({
        "check": "process-group",
        "device": format!("{device:?}"),
        "backend": format!("{backend:?}"),
        "collectives": "all-reduce (sum, avg), broadcast, all-gather, reduce-scatter, barrier: ok",
        "join_and_collectives_ms": collectives_ms,
        "train_steps": steps,
        "main_losses": losses,
        "zero0_losses": zero0_losses,
        "one_process_losses": alone,
        "zero0_rel_diff": zero0_rel_diff,
        "zero1_rel_diff": zero1_rel_diff,
        "max_rel_diff": zero0_rel_diff.max(zero1_rel_diff),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_config;

    /// On CPU: the emulated FP8 GEMM is within E4M3's rounding of FP32, native says why it is
    /// unavailable, and the grouped experts agree with the loop (BF16 autocast on both).
    #[test]
    fn cpu_checks_report_agreement() {
        let fp8 = fp8_gemm(Device::Cpu, 64, 256, 128, 1).unwrap();
        let e = fp8["emulated_rel_err_vs_fp32"].as_f64().unwrap();
        assert!(e > 1e-3 && e < 0.1, "E4M3 error {e}");
        assert!(fp8["native"]["unavailable"]
            .as_str()
            .unwrap()
            .contains("not a CUDA"));

        let ex = experts(Device::Cpu, &tiny_config(), 48, 1).unwrap();
        let out = ex["output_rel_err"].as_f64().unwrap();
        let grad = ex["grad_rel_err"].as_f64().unwrap();
        assert!(out < 1e-2 && grad < 1e-2, "grouped vs loop: {ex}");
        assert_eq!(ex["idle_expert_grad_max"].as_f64(), Some(0.0));

        // Zero-padded values give the same attention and gradients (FP32 on CPU).
        let at = attention(Device::Cpu, &tiny_config(), 2, 32, 1).unwrap();
        let out = at["padded_output_rel_err"].as_f64().unwrap();
        let grad = at["padded_grad_rel_err"].as_f64().unwrap();
        assert!(out < 1e-5 && grad < 1e-5, "padded vs plain: {at}");
        assert_eq!(at["qk_head_dim"], 24);
        assert_eq!(at["v_head_dim"], 16);
        assert!(at["plain"]["ms"].as_f64().unwrap() > 0.0, "{at}");
        // On the CPU the narrower values get the math kernel, padded ones FlashAttention.
        assert_eq!(at["backend"], "math", "{at}");
        assert_eq!(at["padded_backend"], "flash", "{at}");
        assert_eq!(at["training_pads"], true, "{at}");
    }

    /// A one-rank Gloo group on CPU: the collectives keep the tensor, then ZeRO-0 and ZeRO-1
    /// training (many buckets and rounds: 64 KiB against tiny's 5 MB) match one process.
    #[test]
    fn one_rank_process_group_trains() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/train.toml");
        let mut train = TrainConfig::from_file(&path).unwrap();
        (train.seq_len, train.micro_batch) = (32, 4);
        train.batch = crate::schedule::BatchRamp {
            start: 4,
            end: 4,
            ramp: 0.0,
        };
        train.distributed.bucket_mb = 1.0 / 16.0;
        let pg = process_group(Device::Cpu, &tiny_config(), train, 3).unwrap();
        assert_eq!(pg["backend"], "Gloo");
        let losses = pg["main_losses"].as_array().unwrap();
        assert_eq!(losses.len(), 3);
        assert!(losses.iter().all(|l| l.as_f64().unwrap().is_finite()));
        assert!(pg["max_rel_diff"].as_f64().unwrap() < 1e-4, "{pg}");
    }
}
