//! `whale train`: pretrain a DeepSeek-family model on token shards (or a synthetic stream).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use trainer::config::ModelConfig;
use trainer::dist::Placement;
use trainer::experts::ExpertsPath;
use trainer::init_from::InitFrom;
use trainer::linear::Precision;
use trainer::run::{pick_device, rank_device, run as run_training, DataSpec, RunOptions};
use trainer::train::TrainConfig;

/// Train from `--model` and `--config` into the run directory `--out`, which receives
/// `metrics.jsonl`, `manifest.json` and `checkpoints/step-N/` (safetensors with the public
/// DeepSeek tensor names + transformers config.json + optimizer state + data cursor).
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<TrainCommand>,
    /// Directory of token shards written by `whale shard`.
    #[arg(
        long,
        required_unless_present = "synthetic",
        conflicts_with = "synthetic"
    )]
    shards: Option<PathBuf>,
    /// The tokenizer.json the shards should have been encoded with: training refuses shards whose
    /// recorded tokenizer hash differs.
    #[arg(long, requires = "shards")]
    tokenizer: Option<PathBuf>,
    /// Held-out token shards whose loss is logged every `eval_every` steps (train config) and
    /// after the last step. Default: SHARDS/val/, which `whale shard --val-fraction` writes.
    #[arg(long)]
    val_shards: Option<PathBuf>,
    /// Train on a deterministic, learnable synthetic token stream instead of shards (smoke tests,
    /// benchmarks).
    #[arg(long)]
    synthetic: bool,
    /// Model config TOML (configs/model/*.toml).
    #[arg(long, default_value = "configs/model/tiny.toml")]
    model: PathBuf,
    /// Training recipe TOML: sequence length, batch and its ramp, LR schedule, λ, γ, α, budget.
    #[arg(long, default_value = "configs/train.toml")]
    config: PathBuf,
    /// Run directory.
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Stop after this many optimizer steps in total (default: when the token budget is spent).
    #[arg(long)]
    steps: Option<u64>,
    /// Continue the run in --out from its newest checkpoint, with the configs saved there
    /// (--model and --config are then ignored). Without checkpoints, starts fresh.
    #[arg(long)]
    resume: bool,
    /// Start a new training phase from another run's checkpoint (RUN/checkpoints/step-N): its
    /// weights, with this run's --model and --config (e.g. a longer max_seq_len with YaRN) and a
    /// fresh step count, LR schedule and data order. The model config may differ only in
    /// max_seq_len, the YaRN fields and training-only MoE options (capacity_factor, α2, α3), every
    /// tensor keeping its shape. With --resume and
    /// checkpoints already in --out, the run continues from those instead.
    #[arg(long, value_name = "CHECKPOINT")]
    init_from: Option<PathBuf>,
    /// With --init-from, carry over the checkpoint's AdamW moments and step count; without it the
    /// optimizer starts fresh (zero moments), as a new LR warmup expects.
    #[arg(long, requires = "init_from")]
    keep_optimizer: bool,
    /// auto (CUDA when libtorch sees a GPU), cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: String,
    /// GEMM precision of the Linear layers: auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 (BF16
    /// autocast, on CPU too), or fp8 (DeepSeek-V3's E4M3 recipe; the rest of the model as with
    /// auto).
    #[arg(long, default_value = "auto")]
    precision: String,
    /// FP8 GEMM backend with --precision fp8: auto (native _scaled_mm where the GPU supports
    /// DeepSeek's block scales, else emulated), native, or emulated.
    #[arg(long, default_value = "auto")]
    fp8_backend: String,
    /// FP8 scale per tile/block with --precision fp8: exact (amax/448, the full E4M3 range) or
    /// pow2 (rounded up to a power of two, so rescaling is exact: DeepSeek-V3's variant).
    #[arg(long, default_value = "exact")]
    fp8_scales: String,
    /// With --precision fp8, keep each linear's input for the backward as its FP8 payload (4x less
    /// activation memory than FP32). Pass this flag to keep it in full precision instead.
    #[arg(long)]
    fp8_full_activations: bool,
    /// CPU threads for libtorch (default: libtorch's choice).
    #[arg(long)]
    threads: Option<i32>,
    /// How the MoE's routed experts run: auto (grouped on CUDA in bf16, the default there; else
    /// loop), grouped (all experts as three BF16 `_grouped_mm` GEMMs over stacked weights), or
    /// loop (one SwiGLU per expert; any precision).
    #[arg(long, default_value = "auto")]
    experts: String,
    /// Peak FLOP/s of the accelerator in TFLOP/s, for the MFU (model FLOPs utilization: the
    /// training FLOPs per token of `whale model info`, torchtitan's count, times tokens/s, over
    /// this peak). Default on CUDA: the dense BF16 peak of the GPU by its name (H100 SXM and H200:
    /// 989); an unknown GPU gets no MFU without this flag.
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// Print the final summary as JSON.
    #[arg(long)]
    json: bool,
    /// Data-parallel ranks to start on this machine (one per GPU on CUDA): runs this command N
    /// times with torchrun's environment. Under torchrun or srun leave it out: their environment
    /// already places each process.
    #[arg(long, default_value_t = 1)]
    nproc: usize,
    /// Seconds a rank waits for the others (rendezvous, each exchange) before the job fails.
    #[arg(long, default_value_t = 600)]
    dist_timeout: u64,
    /// Record optimizer steps FIRST-LAST (or one step N, numbered as in metrics.jsonl) with the
    /// PyTorch profiler: every rank writes OUT/profile/rankR-steps-FIRST-LAST.json, a Chrome trace
    /// for Perfetto (ui.perfetto.dev) or chrome://tracing, and a .md summary beside it (GPU busy
    /// share, time by kernel and kind of kernel, CPU operators by self time, CUDA runtime calls,
    /// device reads per step). Skip the first steps, which include warm-up.
    #[arg(long, value_name = "FIRST-LAST")]
    profile_steps: Option<String>,
}

#[derive(clap::Subcommand)]
enum TrainCommand {
    /// Render a run's loss curves and per-layer expert load (max/mean) to a PNG.
    Plot(PlotArgs),
}

#[derive(clap::Args)]
struct PlotArgs {
    /// Run directory (holding metrics.jsonl).
    run: PathBuf,
    /// Output PNG (default: RUN/curves.png).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(TrainCommand::Plot(p)) = args.command {
        let out = p.out.unwrap_or_else(|| p.run.join("curves.png"));
        let steps = trainer::plot::plot(&p.run, &out)?;
        println!("train plot: {steps} steps → {}", out.display());
        return Ok(());
    }
    let placement = Placement::from_env()?;
    match &placement {
        None if args.nproc > 1 => {
            let exe = std::env::current_exe().context("locating whale-train")?;
            let argv: Vec<_> = std::env::args_os().skip(1).collect();
            return trainer::dist::spawn::run_local_ranks(&exe, &argv, args.nproc);
        }
        Some(p) if args.nproc > 1 && args.nproc != p.world_size => bail!(
            "--nproc {} but the launcher started {} ranks: leave --nproc out under torchrun or srun",
            args.nproc,
            p.world_size
        ),
        _ => {}
    }
    let leader = placement.as_ref().is_none_or(|p| p.rank == 0);
    let device = rank_device(pick_device(&args.device)?, placement.as_ref());
    let (precision, autocast) = match (args.precision.as_str(), device.is_cuda()) {
        ("auto", true) | ("bf16", _) => (Precision::Bf16, true),
        ("auto", false) | ("fp32", _) => (Precision::Fp32, false),
        ("fp8", cuda) => {
            let selection = trainer::fp8::select(args.fp8_backend.parse()?, device)?;
            if leader {
                eprintln!("{}", selection.reason);
            }
            let recipe = trainer::fp8::Recipe {
                backend: selection.backend,
                scale_mode: args.fp8_scales.parse()?,
                fp8_activations: !args.fp8_full_activations,
            };
            (Precision::Fp8(recipe), cuda)
        }
        (other, _) => bail!("unknown precision {other:?} (expected auto, fp32, bf16 or fp8)"),
    };
    let data = match args.shards {
        Some(dir) => DataSpec::Shards(dir),
        None => DataSpec::Synthetic,
    };
    let tokenizer_hash = match &args.tokenizer {
        Some(path) => Some(tokenizer::Tokenizer::from_file(path)?.hash()),
        None => None,
    };
    let experts: ExpertsPath = args.experts.parse()?;
    if experts == ExpertsPath::Grouped && matches!(precision, Precision::Fp8(_)) {
        bail!(
            "--experts grouped runs the experts in BF16 and cannot be combined with --precision \
             fp8: use --experts loop (or auto)"
        );
    }
    let peak = match args.peak_tflops {
        Some(tflops) => Some(tflops),
        None if device.is_cuda() => {
            let name = trainer::cuda_info::device_name(device)?;
            let peak = trainer::cuda_info::peak_bf16_tflops(&name);
            if leader {
                match peak {
                    Some(p) => eprintln!(
                        "mfu: {name}, dense BF16 peak {p} TFLOP/s (--peak-tflops overrides)"
                    ),
                    None => eprintln!(
                        "mfu: no known peak for {name}: pass --peak-tflops for an MFU figure"
                    ),
                }
            }
            peak
        }
        None => None,
    };
    let opts = RunOptions {
        run_dir: args.out.context("--out is required")?,
        model: ModelConfig::from_file(&args.model)?,
        train: TrainConfig::from_file(&args.config)?,
        data,
        device,
        precision,
        autocast,
        experts,
        max_steps: args.steps,
        resume: args.resume,
        peak_flops: peak.map(|t| t * 1e12),
        progress: !args.json,
        threads: args.threads,
        tokenizer_hash,
        placement,
        dist_timeout: Duration::from_secs(args.dist_timeout),
        val_shards: args.val_shards,
        init_from: args.init_from.map(|checkpoint| InitFrom {
            checkpoint,
            keep_optimizer: args.keep_optimizer,
        }),
        profile: args.profile_steps.as_deref().map(str::parse).transpose()?,
    };
    let s = run_training(&opts)?;
    if !leader {
        return Ok(());
    }
    if matches!(opts.precision, Precision::Fp8(_)) {
        let (fp8, full) = trainer::fp8::take_saved_input_bytes();
        let ran = s.steps - s.resumed_from_step.unwrap_or(0);
        let per_step = |b: u64| b as f64 / ran.max(1) as f64 / (1 << 20) as f64;
        eprintln!(
            "fp8: linear inputs held for backward {:.2} MiB/step in FP8 vs {:.2} MiB at full precision",
            per_step(fp8),
            per_step(full)
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        let resumed = s
            .resumed_from_step
            .map(|r| format!(" (resumed at step {r})"))
            .or_else(|| {
                opts.init_from.as_ref().map(|i| {
                    let optimizer = if i.keep_optimizer { "kept" } else { "fresh" };
                    format!(" (from {}, optimizer {optimizer})", i.checkpoint.display())
                })
            })
            .unwrap_or_default();
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        let val = s
            .val_loss
            .map(|v| format!(", held-out {v:.4}"))
            .unwrap_or_default();
        let mfu = s
            .mfu
            .map(|u| format!(", MFU {:.1}%", 100.0 * u))
            .unwrap_or_default();
        let memory = s
            .gpu_memory
            .map(|m| {
                format!(
                    ", peak GPU memory {:.2} GiB",
                    m.allocated_bytes as f64 / (1u64 << 30) as f64
                )
            })
            .unwrap_or_default();
        println!(
            "train: {} steps{resumed}, {} tokens, loss {} → {} (main {}{val}), {:.0} tokens/s \
             (median step {:.0}{mfu}){memory}, checkpoint {}",
            s.steps,
            s.tokens,
            fmt(s.first_loss),
            fmt(s.final_loss),
            fmt(s.final_main_loss),
            s.tokens_per_second,
            s.median_step_tokens_per_second,
            s.checkpoint.display()
        );
    }
    Ok(())
}
