//! `whale`: raw web dumps to a trained DeepSeek-style model. This binary only parses arguments;
//! each subcommand's flags live in `cli/<stage>.rs` and the work happens in the library crates.
//! It links no libtorch: `train`, `eval`, `generate` and `model` are handed to `whale-train`
//! (`cli/train.rs`).

mod cli;

use clap::{Parser, Subcommand};

/// whale: dedup → filter → remix → tokenizer → shard → train, one command per stage.
///
/// Every stage reads a directory and writes a directory with a manifest.json, can be resumed,
/// and can be split into --tasks N --task I (or a Slurm job array). Run `whale <command> --help`.
#[derive(Parser)]
#[command(name = "whale", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a deterministic, realistic Common-Crawl-style sample dump with ground truth.
    Synth(cli::synth::Args),
    /// Global exact + MinHash-LSH near-duplicate removal across all dumps.
    Dedup(cli::dedup::Args),
    /// Write Slurm job-array scripts that run a stage's sub-steps on a cluster.
    #[command(subcommand)]
    Slurm(cli::slurm::SlurmCommand),
    /// Quality rules and language id: keep good documents, count every rejection by rule.
    Filter(cli::filter::Args),
    /// Re-balance domains (or sources, languages, categories) by weights or temperature.
    Remix(cli::remix::Args),
    /// Byte-level BPE (DeepSeek-V3 pre-tokenizer): train, encode, decode, inspect tokenizer.json.
    #[command(subcommand)]
    Tokenizer(cli::tokenizer::TokenizerCommand),
    /// Encode documents into zstd token shards with an index and checksums.
    Shard(cli::shard::Args),
    /// Inspect, verify or decode token shards.
    #[command(subcommand)]
    Shards(cli::shard::ShardsCommand),
    /// Pretrain the DeepSeek-V3-style model (MLA, DeepSeekMoE, MTP) on token shards (runs
    /// `whale-train`, which links libtorch; see `whale train --help`).
    Train(cli::train::Forwarded),
    /// Loss, perplexity and bits per byte of a checkpoint on held-out token shards (`whale eval
    /// CKPT --shards DIR`; runs `whale-train`).
    Eval(cli::train::Forwarded),
    /// Continue prompts with a trained checkpoint, streaming the text: greedy, sampling, or MTP
    /// speculative decoding over MLA's latent cache (`whale generate CKPT --tokenizer T --prompt
    /// TEXT`; runs `whale-train`).
    Generate(cli::train::Forwarded),
    /// Inspect a model config: parameters, KV cache, FLOPs (`whale model info CONFIG`; runs
    /// `whale-train`).
    Model(cli::train::Forwarded),
    /// Check the trainer's device kernels against their reference paths on this machine's CPU or
    /// GPU (`whale check fp8-gemm|experts|process-group`; runs `whale-train`).
    Check(cli::train::Forwarded),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Synth(args) => cli::synth::run(args),
        Command::Dedup(args) => cli::dedup::run(args),
        Command::Slurm(cmd) => cli::slurm::run(cmd),
        Command::Filter(args) => cli::filter::run(args),
        Command::Remix(args) => cli::remix::run(args),
        Command::Tokenizer(cmd) => cli::tokenizer::run(cmd),
        Command::Shard(args) => cli::shard::run(args),
        Command::Shards(cmd) => cli::shard::run_shards(cmd),
        Command::Train(args) => cli::train::run("train", args),
        Command::Eval(args) => cli::train::run("eval", args),
        Command::Generate(args) => cli::train::run("generate", args),
        Command::Model(args) => cli::train::run("model", args),
        Command::Check(args) => cli::train::run("check", args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
