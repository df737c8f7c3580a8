//! Per-subcommand flags (clap derive) and the thin glue that calls the library crates.

pub mod dedup;
pub mod filter;
pub mod remix;
pub mod shard;
pub mod slurm;
pub mod split;
pub mod synth;
pub mod tokenizer;
pub mod train;
