//! `whale train --init-from CHECKPOINT`: a new run — a new training phase — that starts from
//! another run's weights with changed configs, as DeepSeek-V2 and V3 extended their context with
//! YaRN from the 4K-pretrained model (V3: 4K → 32K → 128K, each phase its own run). Unlike
//! `--resume`, the new run has its own model and train configs, step counter, LR schedule and data
//! order. The model config may change only where the weights keep their meaning: every tensor
//! shape must match, and RoPE may change only as `check_rope` allows.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint::TrainerState;
use crate::config::ModelConfig;

/// What `--init-from` asks for.
#[derive(Clone, Debug)]
pub struct InitFrom {
    /// `RUN/checkpoints/step-N` of the earlier phase.
    pub checkpoint: PathBuf,
    /// Carry the AdamW moments over (`--keep-optimizer`) instead of starting them at zero.
    pub keep_optimizer: bool,
}

/// Where a run's weights came from; kept in every checkpoint of the run (`state.json`) and in
/// its manifest, so the lineage of a multi-phase model survives resumes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// The checkpoint the run started from.
    pub checkpoint: PathBuf,
    /// Its step and model name.
    pub step: u64,
    pub model: String,
    /// Whether the AdamW moments (and their bias-correction step) were carried over.
    pub optimizer: OptimizerStart,
}

/// How the optimizer of a new phase starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerStart {
    /// Zero moments, bias correction from step 1: the default, as a new LR warmup expects.
    Fresh,
    /// The checkpoint's moments and step count.
    Kept,
}

/// Model-config fields a new phase may change: the name, the init (moot once weights are
/// loaded), what only training does (token dropping, the V2 balance losses), the RoPE table
/// length, and the YaRN fields (checked by `check_rope`).
const FREE: [&str; 11] = [
    "name",
    "init_std",
    "capacity_factor",
    "device_balance_alpha",
    "comm_balance_alpha",
    "max_seq_len",
    "original_seq_len",
    "rope_factor",
    "beta_fast",
    "beta_slow",
    "mscale",
];

/// Checks that a model with config `target` may start from the checkpoint at `dir` whose state is
/// `source` (tensor shapes are checked when the weights are copied, naming the tensor).
pub fn check(dir: &Path, source: &TrainerState, target: &ModelConfig) -> Result<()> {
    let before = serde_json::to_value(&source.model)?;
    let after = serde_json::to_value(target)?;
    let changed: Vec<String> = after
        .as_object()
        .expect("a model config serializes to an object")
        .iter()
        .filter(|(key, value)| !FREE.contains(&key.as_str()) && before.get(key) != Some(value))
        .map(|(key, value)| {
            let old = before.get(key).unwrap_or(&serde_json::Value::Null);
            format!("{key} = {old} in the checkpoint, {value} in the new config")
        })
        .collect();
    if !changed.is_empty() {
        bail!(
            "--init-from {}: the new model config changes what the checkpoint's weights compute ({}); a new phase may change only max_seq_len, the YaRN fields and the training-only MoE options: copy the rest from the checkpoint's model config (\"model\" in its state.json)",
            dir.display(),
            changed.join("; ")
        );
    }
    check_rope(&source.model, source.train.seq_len, target)
}

/// RoPE may change only as context extension does: plain RoPE may be stretched with YaRN from the
/// context the checkpoint was trained at (original_seq_len between its training seq_len and its
/// max_seq_len), a YaRN-stretched model keeps its YaRN parameters and only grows max_seq_len (V3's
/// 32K → 128K phase), and YaRN is never removed (that would change the learned frequencies).
fn check_rope(source: &ModelConfig, trained_len: i64, target: &ModelConfig) -> Result<()> {
    match (source.uses_yarn(), target.uses_yarn()) {
        (false, false) => Ok(()),
        (true, false) => bail!(
            "the checkpoint uses YaRN (original_seq_len {}, rope_factor {}) but the new config has plain RoPE (max_seq_len {} <= original_seq_len {}), which would change the frequencies it learned: keep its YaRN fields and a max_seq_len above original_seq_len",
            source.original_seq_len,
            source.rope_factor,
            target.max_seq_len,
            target.original_seq_len
        ),
        (false, true) => {
            if !(trained_len..=source.max_seq_len).contains(&target.original_seq_len) {
                bail!(
                    "YaRN stretches the context the checkpoint was trained at, but the new config says original_seq_len = {} while the checkpoint trained at {trained_len} tokens with max_seq_len {}: set original_seq_len to {}",
                    target.original_seq_len,
                    source.max_seq_len,
                    source.max_seq_len
                );
            }
            Ok(())
        }
        (true, true) => {
            let fields = [
                ("original_seq_len", source.original_seq_len as f64, target.original_seq_len as f64),
                ("rope_factor", source.rope_factor, target.rope_factor),
                ("beta_fast", source.beta_fast, target.beta_fast),
                ("beta_slow", source.beta_slow, target.beta_slow),
                ("mscale", source.mscale, target.mscale),
            ];
            for (name, old, new) in fields {
                if old != new {
                    bail!(
                        "the checkpoint already uses YaRN, and a further phase keeps its parameters and only grows max_seq_len (as DeepSeek-V3's 32K → 128K phase did): {name} is {old} in the checkpoint, {new} in the new config"
                    );
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::repo_config;
    use crate::train::TrainConfig;

    fn state(model: ModelConfig, seq_len: i64) -> TrainerState {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/train.toml");
        let mut train = TrainConfig::from_file(&path).unwrap();
        train.seq_len = seq_len;
        TrainerState {
            step: 10,
            tokens: 0,
            model,
            train,
            data: serde_json::Value::Null,
            tokenizer_hash: None,
            init_from: None,
        }
    }

    fn error(source: &TrainerState, target: &ModelConfig) -> String {
        check(Path::new("ckpt"), source, target)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_demo_pair_and_v2s_extension_are_valid() {
        let phase1 = state(repo_config("tiny-dense"), 64);
        check(Path::new("ckpt"), &phase1, &repo_config("tiny-dense-yarn")).unwrap();
        // And a further YaRN phase that only grows the context (V3's second phase).
        let mut longer = repo_config("tiny-dense-yarn");
        longer.max_seq_len = 1024;
        let phase2 = state(repo_config("tiny-dense-yarn"), 256);
        check(Path::new("ckpt"), &phase2, &longer).unwrap();
        // DeepSeek-V2's own extension: 4K pretraining, then YaRN (s = 40) at 32K.
        let v2 = state(repo_config("deepseek-v2"), 4096);
        check(Path::new("ckpt"), &v2, &repo_config("deepseek-v2-128k")).unwrap();
    }

    #[test]
    fn refuses_changes_the_weights_cannot_follow() {
        let phase1 = state(repo_config("tiny-dense"), 64);
        let mut other = repo_config("tiny-dense-yarn");
        other.rope_theta = 500000.0;
        other.n_kv_heads = Some(4);
        let err = error(&phase1, &other);
        assert!(
            err.contains("rope_theta = 10000.0 in the checkpoint, 500000.0"),
            "{err}"
        );
        assert!(err.contains("n_kv_heads = 2 in the checkpoint, 4"), "{err}");

        let mut wrong_origin = repo_config("tiny-dense-yarn");
        wrong_origin.original_seq_len = 32;
        let err = error(&phase1, &wrong_origin);
        assert!(err.contains("set original_seq_len to 64"), "{err}");

        let phase2 = state(repo_config("tiny-dense-yarn"), 256);
        let err = error(&phase2, &repo_config("tiny-dense"));
        assert!(err.contains("plain RoPE"), "{err}");
        let mut refactored = repo_config("tiny-dense-yarn");
        refactored.rope_factor = 8.0;
        let err = error(&phase2, &refactored);
        assert!(
            err.contains("rope_factor is 4 in the checkpoint, 8"),
            "{err}"
        );
    }
}
