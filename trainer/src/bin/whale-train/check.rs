//! `whale-train check`: the device kernels against their reference paths on this machine's device
//! (scripts/gpu-check runs them on a GPU), each printed as one JSON object.

use std::path::PathBuf;

use trainer::config::ModelConfig;
use trainer::device_check;
use trainer::run::pick_device;
use trainer::train::TrainConfig;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
    /// auto (CUDA when libtorch sees a GPU), cpu or cuda.
    #[arg(long, default_value = "auto", global = true)]
    device: String,
    /// Timed repetitions of each variant (the median is reported), after two warm-up runs.
    #[arg(long, default_value_t = 10, global = true)]
    runs: usize,
}

#[derive(clap::Subcommand)]
enum What {
    /// One FP8 GEMM M×K·(N×K)ᵀ with DeepSeek's block scales: the emulation against FP32, native
    /// `_scaled_mm` (Hopper) against the emulation, and the speed of both against BF16.
    Fp8Gemm {
        /// Rows of the activation operand (tokens).
        #[arg(long, default_value_t = 4096)]
        m: i64,
        /// The contraction dimension (a linear layer's input features).
        #[arg(long, default_value_t = 4096)]
        k: i64,
        /// Rows of the weight operand (output features).
        #[arg(long, default_value_t = 4096)]
        n: i64,
    },
    /// The routed experts of one MoE layer of --model on --tokens tokens: grouped `_grouped_mm`
    /// GEMMs against the per-expert loop (outputs, gradients, forward + backward time).
    Experts {
        /// Model config whose expert count, top-k, dim and expert width are used.
        #[arg(long, default_value = "configs/model/small.toml")]
        model: PathBuf,
        /// Tokens routed through the layer (each to top-k experts; expert 0 gets none).
        #[arg(long, default_value_t = 16384)]
        tokens: i64,
    },
    /// The causal attention of one MLA layer of --model in training: SDPA on the values as
    /// they are against the values zero-padded to the query's head dim (which lets
    /// FlashAttention run): the kernel each gets, their agreement, forward + backward time.
    Attention {
        /// Model config whose heads and head dims are used.
        #[arg(long, default_value = "configs/model/small.toml")]
        model: PathBuf,
        /// Sequences in the batch.
        #[arg(long, default_value_t = 16)]
        batch: i64,
        /// Tokens per sequence.
        #[arg(long, default_value_t = 1024)]
        seq: i64,
    },
    /// A one-rank process group (NCCL on CUDA, Gloo on CPU): every collective data parallelism
    /// uses, then --steps ZeRO-0 (blocks recomputed) and --steps ZeRO-1 training steps of
    /// --model with --config over that group, which must match the same steps in one process.
    ProcessGroup {
        /// Model config to train.
        #[arg(long, default_value = "configs/model/tiny.toml")]
        model: PathBuf,
        /// Training recipe TOML (sequence length, batch, LR); ZeRO-1 is turned on.
        #[arg(long, default_value = "configs/train.toml")]
        config: PathBuf,
        /// Optimizer steps to train over the group.
        #[arg(long, default_value_t = 10)]
        steps: usize,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = pick_device(&args.device)?;
    let report = match args.what {
        What::Fp8Gemm { m, k, n } => device_check::fp8_gemm(device, m, k, n, args.runs)?,
        What::Experts { model, tokens } => {
            device_check::experts(device, &ModelConfig::from_file(&model)?, tokens, args.runs)?
        }
        What::Attention { model, batch, seq } => device_check::attention(
            device,
            &ModelConfig::from_file(&model)?,
            batch,
            seq,
            args.runs,
        )?,
        What::ProcessGroup {
            model,
            config,
            steps,
        } => device_check::process_group(
            device,
            &ModelConfig::from_file(&model)?,
            TrainConfig::from_file(&config)?,
            steps,
        )?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
