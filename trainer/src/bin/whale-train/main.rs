//! `whale-train`: the half of whale that links libtorch. `whale train`, `eval`, `generate` and
//! `model` run this binary (found beside `whale`), so the data stages never load libtorch and a
//! data-only install needs no torch wheel. It can also be run directly: `whale-train train …`.

mod check;
mod checkpoint_arg;
mod eval;
mod generate;
mod model;
mod train;

use clap::{Parser, Subcommand};

/// whale's trainer: pretrain a DeepSeek-style model on token shards, evaluate and sample from its
/// checkpoints, and inspect model configs.
///
/// Usually reached as `whale train …` / `whale eval …` / `whale generate …` / `whale model …`;
/// run `whale train --help`.
#[derive(Parser)]
#[command(name = "whale", bin_name = "whale", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pretrain a DeepSeek-family model on token shards: V3 (MLA, DeepSeekMoE, MTP), V2 (softmax
    /// routing, token dropping) or DeepSeek LLM (GQA, dense), or extend one's context (--init-from).
    Train(Box<train::Args>),
    /// Loss, perplexity and bits per byte of a checkpoint on held-out token shards.
    Eval(Box<eval::Args>),
    /// Continue prompts with a trained checkpoint, streaming the text (greedy, sampling, or MTP
    /// speculative decoding over MLA's latent cache).
    Generate(Box<generate::Args>),
    /// Inspect a model config: parameters, KV cache, FLOPs (`whale model info CONFIG`).
    Model(model::Args),
    /// Check the device kernels against their reference paths on this machine's CPU or GPU
    /// (native FP8 GEMM, grouped-GEMM experts, the NCCL/Gloo process group); JSON on stdout.
    Check(check::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::run(*args),
        Command::Generate(args) => generate::run(*args),
        Command::Model(args) => model::run(args),
        Command::Check(args) => check::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
