//! `whale model info CONFIG`: parameter counts, KV-cache size and FLOPs of a model config, computed
//! from shapes only, so the 671B config works on a laptop.

use std::path::PathBuf;

use trainer::config::ModelConfig;
use trainer::expert_parallel::ExpertLayout;
use trainer::info::model_info;
use trainer::memory_fit::MemoryFloor;
use trainer::optim::OptimConfig;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Total and activated parameters, KV-cache bytes per token (MLA vs MHA/GQA), FLOPs per token,
    /// and the training state each rank holds before activations.
    Info(InfoArgs),
    /// Next-token logits of a checkpoint's main model for given token ids, written to a
    /// safetensors file (`tokens`, `logits`), e.g. to compare with transformers.
    Logits(LogitsArgs),
}

#[derive(clap::Args)]
struct LogitsArgs {
    /// Checkpoint directory written by `whale train` (checkpoints/step-N).
    checkpoint: PathBuf,
    /// Comma-separated token ids.
    #[arg(long, value_delimiter = ',', required = true)]
    tokens: Vec<i64>,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct InfoArgs {
    /// Model config TOML (e.g. configs/model/deepseek-v3.toml).
    config: PathBuf,
    /// Sequence length at which attention FLOPs are counted (default: the config's original_seq_len
    /// or max_seq_len, whichever is smaller).
    #[arg(long)]
    seq_len: Option<i64>,
    /// Ranks the training-state line divides the model over: with ZeRO-1, and with ZeRO-1 and
    /// expert parallelism over all of them when they divide the routed experts.
    #[arg(long, default_value_t = 8)]
    ranks: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Bytes of training state (FP32 weights, gradients, AdamW moments) per rank: on one rank, with
/// ZeRO-1 over `ranks`, and with ZeRO-1 and expert parallelism over all of them.
#[derive(serde::Serialize)]
struct TrainingState {
    ranks: usize,
    one_rank: u64,
    zero1: u64,
    zero1_expert_parallel: Option<u64>,
}

fn training_state(cfg: &ModelConfig, ranks: usize) -> anyhow::Result<TrainingState> {
    let floor = |zero: u8, ep: usize, world: usize| -> anyhow::Result<u64> {
        let layout = ExpertLayout::new(ep, 0, world, cfg)?;
        Ok(MemoryFloor::of(cfg, &OptimConfig::default(), zero, &layout).total())
    };
    let splits = cfg.n_routed_experts > 0 && (cfg.n_routed_experts as usize).is_multiple_of(ranks);
    Ok(TrainingState {
        ranks,
        one_rank: floor(0, 1, 1)?,
        zero1: floor(1, 1, ranks)?,
        zero1_expert_parallel: splits.then(|| floor(1, ranks, ranks)).transpose()?,
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Info(a) => {
            let cfg = ModelConfig::from_file(&a.config)?;
            let seq_len = a
                .seq_len
                .unwrap_or(cfg.max_seq_len.min(cfg.original_seq_len));
            anyhow::ensure!(a.ranks >= 1, "--ranks must be at least 1");
            let info = model_info(&cfg, seq_len);
            let state = training_state(&cfg, a.ranks)?;
            if a.json {
                let mut json = serde_json::to_value(&info)?;
                json["training_state_per_rank"] = serde_json::to_value(&state)?;
                println!("{}", serde_json::to_string_pretty(&json)?);
            } else {
                let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
                let ep = state
                    .zero1_expert_parallel
                    .map(|b| format!(" | + expert_parallel {} {}", state.ranks, gib(b)))
                    .unwrap_or_default();
                println!(
                    "{}\ntraining/rank  {} (FP32 weights, gradients, AdamW moments; before \
                     activations) | ZeRO-1 over {} {}{ep}",
                    info.render(),
                    gib(state.one_rank),
                    state.ranks,
                    gib(state.zero1)
                );
            }
            Ok(())
        }
        Command::Logits(a) => {
            trainer::checkpoint::write_logits(&a.checkpoint, &a.tokens, &a.out)?;
            println!("logits of {} tokens → {}", a.tokens.len(), a.out.display());
            Ok(())
        }
    }
}
