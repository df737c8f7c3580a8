//! The CHECKPOINT argument of `generate` and `eval`: a checkpoint directory
//! (`RUN/checkpoints/step-N`) or a run directory, meaning its newest checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The checkpoint directory `path` names.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("model.safetensors").is_file() {
        return Ok(path.to_path_buf());
    }
    if let Some(latest) = trainer::checkpoint::latest(path)? {
        return Ok(latest);
    }
    bail!(
        "{} holds neither model.safetensors nor checkpoints/step-*: pass a checkpoint directory \
         (RUN/checkpoints/step-N) or the run directory of a `whale train` that saved one",
        path.display()
    )
}

/// Where inference runs: the flags `generate` and `eval` share.
#[derive(clap::Args)]
pub struct Runtime {
    /// auto (CUDA when libtorch sees a GPU), cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: String,
    /// CPU threads for libtorch (default: libtorch's choice).
    #[arg(long)]
    threads: Option<i32>,
}

/// Loads a checkpoint's model (main layers and MTP modules) for inference on `--device`, with
/// libtorch limited to `--threads` CPU threads when given.
pub fn load(
    path: &Path,
    runtime: &Runtime,
) -> Result<(PathBuf, tch::nn::VarStore, trainer::model::Model)> {
    if let Some(n) = runtime.threads {
        tch::set_num_threads(n);
    }
    let dir = resolve(path)?;
    let device = trainer::run::pick_device(&runtime.device)?;
    let (vs, model) = trainer::checkpoint::load_model(&dir, device)?;
    Ok((dir, vs, model))
}

/// Loads `tokenizer.json` and checks it can be the one the checkpoint was trained with: its ids
/// fit the model's vocabulary and, when the training shards recorded a tokenizer, it is that one.
pub fn tokenizer_for(
    path: &Path,
    checkpoint: &Path,
    vocab_size: i64,
) -> Result<tokenizer::Tokenizer> {
    let tok = tokenizer::Tokenizer::from_file(path)?;
    if tok.vocab_size() as i64 > vocab_size {
        bail!(
            "{} has {} ids but the model's vocab_size is {vocab_size}: pass the tokenizer.json \
             the model was trained with",
            path.display(),
            tok.vocab_size()
        );
    }
    let state = trainer::checkpoint::read_state(checkpoint)?;
    if let Some(trained) = state.tokenizer_hash {
        if trained != tok.hash() {
            bail!(
                "{} (hash {:016x}) is not the tokenizer {} was trained with ({trained:016x}): \
                 pass the tokenizer.json given to `whale shard`",
                path.display(),
                tok.hash(),
                checkpoint.display()
            );
        }
    }
    Ok(tok)
}
