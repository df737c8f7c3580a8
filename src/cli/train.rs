//! `whale train`, `eval`, `generate`, `model` and `check`: handed to `whale-train`, the binary
//! that links libtorch, so that `whale` itself — every data stage — runs on machines without
//! torch, starts in milliseconds, and a data-only user never installs the 2.5 GB torch wheel.
//!
//! The hand-over is an `exec`: `whale-train` takes this process's place, so torchrun's and
//! Slurm's signals, exit codes and environment reach the trainer unchanged.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The trainer binary's file name.
const TRAINER: &str = "whale-train";

/// Everything after the command's name, passed to `whale-train` untouched (`--help` too).
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct Forwarded {
    /// The command's flags, read by `whale-train` (run `whale train --help` to see them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// Replaces this process with `whale-train COMMAND ARGS…`; returns only when that fails.
pub fn run(command: &str, forwarded: Forwarded) -> Result<()> {
    let trainer = locate()?;
    let err = Command::new(&trainer)
        .arg(command)
        .args(&forwarded.args)
        .exec();
    Err(err).with_context(|| format!("cannot run {}", trainer.display()))
}

/// `$WHALE_TRAIN` if set, else `whale-train` beside this binary, else on `PATH`.
fn locate() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("WHALE_TRAIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().context("locating the whale binary")?;
    let sibling = exe.with_file_name(TRAINER);
    if sibling.is_file() {
        return Ok(sibling);
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(TRAINER))
        .find(|p| p.is_file());
    match on_path {
        Some(path) => Ok(path),
        None => bail!("{}", missing_trainer(&exe)),
    }
}

/// What to do when `whale-train` is not installed.
fn missing_trainer(exe: &Path) -> String {
    format!(
        "`whale train`, `eval`, `generate` and `model` run `{TRAINER}`, the part of whale that links libtorch, \
         and it is neither beside {} nor on PATH (nor named by $WHALE_TRAIN). To install it, from \
         the whale source tree run `scripts/setup` (it installs torch==2.11.0, whose libtorch the \
         trainer uses, into .venv), then `cargo build --release -p trainer`; `{TRAINER}` lands in \
         target/release/ beside `whale`. The data stages (synth, dedup, filter, remix, tokenizer, \
         shard, shards, slurm) need neither.",
        exe.display()
    )
}
