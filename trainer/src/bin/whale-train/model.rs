//! `whale model info CONFIG`: parameter counts, KV-cache size and FLOPs of a model config, computed
//! from shapes only, so the 671B config works on a laptop.

use std::path::PathBuf;

use trainer::config::ModelConfig;
use trainer::info::model_info;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Total and activated parameters, KV-cache bytes per token (MLA vs MHA/GQA), FLOPs per token.
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
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Info(a) => {
            let cfg = ModelConfig::from_file(&a.config)?;
            let seq_len = a
                .seq_len
                .unwrap_or(cfg.max_seq_len.min(cfg.original_seq_len));
            let info = model_info(&cfg, seq_len);
            if a.json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!("{}", info.render());
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
