//! `whale eval CKPT --shards DIR`: loss, perplexity and bits per byte of a checkpoint on held-out
//! token shards, main model and MTP depths, on a fixed set of windows so checkpoints compare.

use std::path::PathBuf;

use anyhow::Result;
use trainer::eval::{evaluate, EvalConfig};

use crate::checkpoint_arg;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (RUN/checkpoints/step-N), or a run directory for its newest one.
    checkpoint: PathBuf,
    /// Token shards to score (held-out data written by `whale shard` with the model's tokenizer).
    #[arg(long)]
    shards: PathBuf,
    /// The tokenizer.json of the shards: adds bits per byte (tokenizer-independent).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Windows to score (the first N of a seeded order: the same ones for every checkpoint).
    #[arg(long, default_value_t = 64)]
    windows: usize,
    /// Tokens per window (default: the checkpoint's training seq_len).
    #[arg(long)]
    seq_len: Option<i64>,
    /// Seed of the window order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[command(flatten)]
    runtime: checkpoint_arg::Runtime,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let (dir, _vs, model) = checkpoint_arg::load(&args.checkpoint, &args.runtime)?;
    let tokenizer = match &args.tokenizer {
        Some(path) => Some(checkpoint_arg::tokenizer_for(
            path,
            &dir,
            model.cfg.vocab_size,
        )?),
        None => None,
    };
    let state = trainer::checkpoint::read_state(&dir)?;
    let cfg = EvalConfig {
        seq_len: args.seq_len.unwrap_or(state.train.seq_len),
        windows: args.windows,
        seed: args.seed,
        batch: args.batch.max(1),
    };
    let r = evaluate(&model, &args.shards, &cfg, tokenizer.as_ref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let mtp: String = r
        .mtp_losses
        .iter()
        .enumerate()
        .map(|(k, l)| format!(", mtp{} {l:.4}", k + 1))
        .collect();
    let bpb = r
        .bits_per_byte
        .map(|b| format!(", {b:.4} bits/byte"))
        .unwrap_or_default();
    println!(
        "eval {}: {} windows × {} tokens ({} targets): loss {:.4}, perplexity {:.2}{bpb}{mtp}",
        dir.display(),
        r.windows,
        r.seq_len,
        r.tokens,
        r.loss,
        r.perplexity
    );
    Ok(())
}
