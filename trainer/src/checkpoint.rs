//! Checkpoints that other tools can read and that resume a run exactly. A checkpoint directory
//! holds `model.safetensors` with the public DeepSeek-V3 tensor names (MTP module k as layer
//! `n_layers + k`, with its own copies of the shared embedding and head, as in the release),
//! `config.json` for transformers' `DeepseekV3ForCausalLM` (or `LlamaForCausalLM` for the dense
//! GQA models of DeepSeek LLM, whose public checkpoints have that architecture and those names), `optimizer.safetensors` (AdamW moments
//! under `<param>.exp_avg` / `.exp_avg_sq`) and `state.json` (step, tokens, configs, data cursor).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::{nn, Device, Tensor};

use crate::config::{AttentionKind, ModelConfig, ScoreFunc};
use crate::init_from::Origin;
use crate::linear::Precision;
use crate::model::Model;
use crate::optim::AdamW;
use crate::train::TrainConfig;

/// Everything besides tensors that a resumed run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: u64,
    pub tokens: u64,
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Data cursor (`shards::LoaderState` or the synthetic stream's).
    pub data: serde_json::Value,
    /// Hash of the tokenizer the shards were encoded with, when training on shards.
    pub tokenizer_hash: Option<u64>,
    /// The earlier phase's checkpoint this run started from (`--init-from`), if any.
    #[serde(default)]
    pub init_from: Option<Origin>,
}

/// Tensor names and values of a public-style checkpoint: every variable under its own name, plus
/// the MTP layers' copies of the shared embedding and output head.
pub fn named_weights(vs: &nn::VarStore, cfg: &ModelConfig) -> Vec<(String, Tensor)> {
    let vars = vs.variables();
    let mut named: BTreeMap<String, Tensor> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect();
    let embed = &vars["model.embed_tokens.weight"];
    let head = vars.get("lm_head.weight").unwrap_or(embed);
    for k in 0..cfg.mtp_depth {
        let layer = cfg.n_layers + k;
        named.insert(
            format!("model.layers.{layer}.embed_tokens.weight"),
            embed.shallow_clone(),
        );
        named.insert(
            format!("model.layers.{layer}.shared_head.head.weight"),
            head.shallow_clone(),
        );
    }
    named.into_iter().collect()
}

fn write_tensors(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    let cpu: Vec<(&str, Tensor)> = named
        .iter()
        .map(|(n, t)| (n.as_str(), t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&cpu, path).with_context(|| format!("writing {}", path.display()))
}

fn read_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    Ok(Tensor::read_safetensors(path)
        .with_context(|| format!("reading {}", path.display()))?
        .into_iter()
        .collect())
}

/// Copies the weights of `model.safetensors` into the variables of `vs` (names and shapes must
/// match; the MTP copies of embedding and head are ignored).
pub fn load_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    let saved = read_tensors(path)?;
    // In name order, so a mismatch is always reported for the same (first) tensor.
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    tch::no_grad(|| {
        for (name, mut var) in vars {
            let src = saved
                .get(&name)
                .with_context(|| format!("{} has no tensor {name}", path.display()))?;
            if src.size() != var.size() {
                bail!(
                    "{name}: checkpoint shape {:?}, model shape {:?}",
                    src.size(),
                    var.size()
                );
            }
            var.f_copy_(src)?;
        }
        Ok(())
    })
}

/// `config.json` for transformers: `LlamaConfig` for grouped-query attention (dense by
/// validation), `DeepseekV3Config` for MLA with sigmoid gating, `DeepseekV2Config` for MLA with
/// softmax gating (transformers' V3 router is sigmoid only).
pub fn hf_config(cfg: &ModelConfig) -> serde_json::Value {
    match (cfg.attention, cfg.score_func) {
        (AttentionKind::Gqa, _) => llama_config(cfg),
        (AttentionKind::Mla, ScoreFunc::Sigmoid) => deepseek_v3_config(cfg),
        (AttentionKind::Mla, ScoreFunc::Softmax) => deepseek_v2_config(cfg),
    }
}

/// `config.json` of transformers' `DeepseekV2ForCausalLM`: the V3 fields with V2's router,
/// softmax top-k without renormalization, device-limited ("group_limited_greedy": the best
/// `topk_group` of `n_group` groups by their highest affinity) when `n_devices` limits routing.
/// It has no per-expert bias: a run exported this way must keep it at zero (`bias_gamma` 0, as
/// V2 trained). V3-style node-limited groups (`n_expert_groups` > 1) have no V2 equivalent.
fn deepseek_v2_config(cfg: &ModelConfig) -> serde_json::Value {
    let device_limited = cfg.n_limited_devices < cfg.n_devices;
    with(
        deepseek_v3_config(cfg),
        json!({
            "architectures": ["DeepseekV2ForCausalLM"],
            "model_type": "deepseek_v2",
            "topk_method": if device_limited { "group_limited_greedy" } else { "greedy" },
            "n_group": cfg.n_devices,
            "topk_group": cfg.n_limited_devices,
            "norm_topk_prob": false,
        }),
    )
}

/// `base` with the fields of `extra` added or replaced.
fn with(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    for (key, value) in extra.as_object().expect("an object") {
        base[key] = value.clone();
    }
    base
}

/// The fields every transformers decoder config here shares: sizes, RoPE (`rope_scaling` in the
/// architecture's own spelling), norm, init, and no biases or dropout.
fn decoder_config(cfg: &ModelConfig, rope_scaling: Option<serde_json::Value>) -> serde_json::Value {
    json!({
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.inter_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling,
        "rms_norm_eps": cfg.norm_eps,
        "initializer_range": cfg.init_std,
        "attention_bias": false,
        "attention_dropout": 0.0,
        "tie_word_embeddings": cfg.tie_embeddings,
        "torch_dtype": "float32",
        "use_cache": true,
    })
}

/// `config.json` of transformers' `LlamaForCausalLM`, the architecture of the released DeepSeek
/// LLM 7B/67B. YaRN goes in as `rope_scaling` with the attention factor spelled out: transformers
/// multiplies cos and sin by it, which scales q·k by its square, as `softmax_scale` does here.
fn llama_config(cfg: &ModelConfig) -> serde_json::Value {
    let rope_scaling = cfg.uses_yarn().then(|| {
        json!({
            "rope_type": "yarn", "factor": cfg.rope_factor,
            "original_max_position_embeddings": cfg.original_seq_len,
            "beta_fast": cfg.beta_fast, "beta_slow": cfg.beta_slow,
            "attention_factor": cfg.yarn_mscale(),
        })
    });
    with(
        decoder_config(cfg, rope_scaling),
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "num_key_value_heads": cfg.kv_heads(),
            "head_dim": cfg.qk_head_dim(),
            "mlp_bias": false,
        }),
    )
}

/// `config.json` in the format of transformers' `DeepseekV3Config`.
fn deepseek_v3_config(cfg: &ModelConfig) -> serde_json::Value {
    let rope_scaling = cfg.uses_yarn().then(|| {
        json!({
            "type": "yarn", "rope_type": "yarn", "factor": cfg.rope_factor,
            "original_max_position_embeddings": cfg.original_seq_len,
            "beta_fast": cfg.beta_fast, "beta_slow": cfg.beta_slow,
            "mscale": cfg.mscale, "mscale_all_dim": cfg.mscale,
        })
    });
    with(
        decoder_config(cfg, rope_scaling),
        json!({
            "architectures": ["DeepseekV3ForCausalLM"],
            "model_type": "deepseek_v3",
            "moe_intermediate_size": cfg.moe_inter_dim,
            "num_nextn_predict_layers": cfg.mtp_depth,
            "num_key_value_heads": cfg.n_heads,
            "n_shared_experts": cfg.n_shared_experts,
            "n_routed_experts": cfg.n_routed_experts,
            "num_experts_per_tok": cfg.n_activated_experts,
            "routed_scaling_factor": cfg.route_scale,
            "n_group": cfg.n_expert_groups,
            "topk_group": cfg.n_limited_groups,
            "topk_method": "noaux_tc",
            "scoring_func": match cfg.score_func { ScoreFunc::Sigmoid => "sigmoid", ScoreFunc::Softmax => "softmax" },
            "norm_topk_prob": cfg.score_func == ScoreFunc::Sigmoid,
            // Leading dense layers: all of them with ffn = "dense".
            "first_k_dense_replace": (0..cfg.n_layers).take_while(|&i| !cfg.is_moe_layer(i)).count(),
            "moe_layer_freq": 1,
            "q_lora_rank": (cfg.q_lora_rank > 0).then_some(cfg.q_lora_rank),
            "kv_lora_rank": cfg.kv_lora_rank,
            "qk_nope_head_dim": cfg.qk_nope_head_dim,
            "qk_rope_head_dim": cfg.qk_rope_head_dim,
            "v_head_dim": cfg.v_head_dim,
            "head_dim": cfg.qk_rope_head_dim,
            "rope_interleave": true,
        }),
    )
}

/// `checkpoints/step-NNNNNNNN` under a run directory.
pub fn checkpoint_dir(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join("checkpoints").join(format!("step-{step:08}"))
}

/// Complete checkpoints of a run, oldest first (incomplete ones keep a `.tmp` suffix).
fn list(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = run_dir.join("checkpoints");
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint of a run, if any.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list(run_dir)?.pop())
}

/// Deletes all but the newest `keep` checkpoints (`keep` 0 keeps everything).
pub fn prune(run_dir: &Path, keep: usize) -> Result<()> {
    let all = list(run_dir)?;
    if keep > 0 && all.len() > keep {
        for old in &all[..all.len() - keep] {
            std::fs::remove_dir_all(old).with_context(|| format!("removing {}", old.display()))?;
        }
    }
    Ok(())
}

/// Writes a checkpoint to `dir` atomically (a temp directory renamed when complete): the whole
/// model's `weights` (`named_weights`, with the experts of other ranks gathered in under expert
/// parallelism) and the optimizer's moments of whole parameters (`AdamW::state_tensors`, or
/// gathered from the ranks).
pub fn save(
    dir: &Path,
    weights: &[(String, Tensor)],
    moments: &[(String, Tensor)],
    state: &TrainerState,
) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    write_tensors(weights, &tmp.join("model.safetensors"))?;
    write_tensors(moments, &tmp.join("optimizer.safetensors"))?;
    std::fs::write(
        tmp.join("config.json"),
        serde_json::to_string_pretty(&hf_config(&state.model))?,
    )?;
    std::fs::write(tmp.join("state.json"), serde_json::to_string_pretty(state)?)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::rename(&tmp, dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))
}

/// Reads `state.json` of a checkpoint.
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join("state.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Loads weights and optimizer moments of a checkpoint written by `save`.
pub fn restore(
    dir: &Path,
    vs: &nn::VarStore,
    optimizer: &mut AdamW,
    state: &TrainerState,
) -> Result<()> {
    load_weights(vs, &dir.join("model.safetensors"))?;
    load_moments(dir, optimizer, state.step)
}

/// Loads the AdamW moments of a checkpoint, with `step` optimizer steps behind them (for the
/// bias correction).
pub fn load_moments(dir: &Path, optimizer: &mut AdamW, step: u64) -> Result<()> {
    let moments = read_tensors(&dir.join("optimizer.safetensors"))?;
    optimizer.load_state_tensors(&moments, step)
}

/// Rebuilds the main model of a checkpoint (for scoring and export checks).
pub fn load_model(dir: &Path, device: Device) -> Result<(nn::VarStore, Model)> {
    let state = read_state(dir)?;
    let vs = nn::VarStore::new(device);
    let model = Model::new(&vs.root(), &state.model, &Precision::Fp32);
    load_weights(&vs, &dir.join("model.safetensors"))?;
    Ok((vs, model))
}

/// Next-token logits `[1, len, vocab]` of a checkpoint's main model for `tokens`, written with
/// the tokens to a safetensors file (`tokens`, `logits`) for comparison with other implementations.
pub fn write_logits(dir: &Path, tokens: &[i64], out: &Path) -> Result<()> {
    let (_vs, model) = load_model(dir, Device::Cpu)?;
    let ids = Tensor::from_slice(tokens).view([1, -1]);
    let logits = tch::no_grad(|| model.logits(&ids));
    write_tensors(
        &[("tokens".to_string(), ids), ("logits".to_string(), logits)],
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{repo_config, tiny_config};

    #[test]
    fn tensor_names_follow_the_public_checkpoint() {
        let cfg = tiny_config();
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = Model::new(&vs.root(), &cfg, &Precision::Fp32);
        let names: Vec<String> = named_weights(&vs, &cfg)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for expected in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
            "model.layers.0.input_layernorm.weight",
            "model.layers.0.post_attention_layernorm.weight",
            "model.layers.0.self_attn.q_a_proj.weight",
            "model.layers.0.self_attn.q_a_layernorm.weight",
            "model.layers.0.self_attn.q_b_proj.weight",
            "model.layers.0.self_attn.kv_a_proj_with_mqa.weight",
            "model.layers.0.self_attn.kv_a_layernorm.weight",
            "model.layers.0.self_attn.kv_b_proj.weight",
            "model.layers.0.self_attn.o_proj.weight",
            "model.layers.0.mlp.gate_proj.weight",
            "model.layers.0.mlp.up_proj.weight",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.1.mlp.gate.weight",
            "model.layers.1.mlp.gate.e_score_correction_bias",
            "model.layers.1.mlp.experts.7.down_proj.weight",
            "model.layers.1.mlp.shared_experts.gate_proj.weight",
            "model.layers.2.enorm.weight",
            "model.layers.2.hnorm.weight",
            "model.layers.2.eh_proj.weight",
            "model.layers.2.embed_tokens.weight",
            "model.layers.2.shared_head.norm.weight",
            "model.layers.2.shared_head.head.weight",
            "model.layers.2.self_attn.kv_b_proj.weight",
            "model.layers.2.mlp.experts.0.gate_proj.weight",
        ] {
            assert!(names.iter().any(|n| n == expected), "missing {expected}");
        }
        let q_proj = names
            .iter()
            .filter(|n| n.contains("self_attn.q_proj"))
            .count();
        assert_eq!(q_proj, 0, "low-rank query has no q_proj");
    }

    #[test]
    fn hf_config_describes_the_model() {
        let v3 = hf_config(&repo_config("deepseek-v3"));
        assert_eq!(v3["num_hidden_layers"], 61);
        assert_eq!(v3["first_k_dense_replace"], 3);
        assert_eq!(v3["q_lora_rank"], 1536);
        assert_eq!(v3["rope_scaling"]["factor"], 40.0);
        let mut dense_mla = repo_config("tiny");
        dense_mla.ffn = crate::config::FfnKind::Dense;
        assert_eq!(hf_config(&dense_mla)["first_k_dense_replace"], 2);
        let lite = hf_config(&repo_config("deepseek-v2-lite"));
        assert!(lite["q_lora_rank"].is_null());
        assert!(lite["rope_scaling"].is_null());
        assert_eq!(lite["architectures"][0], "DeepseekV2ForCausalLM");
        assert_eq!(lite["topk_method"], "greedy");
        let v2 = hf_config(&repo_config("deepseek-v2"));
        assert_eq!(v2["topk_method"], "group_limited_greedy");
        assert_eq!((&v2["n_group"], &v2["topk_group"]), (&json!(8), &json!(3)));
        let llm = hf_config(&repo_config("deepseek-llm-67b"));
        assert_eq!(llm["architectures"][0], "LlamaForCausalLM");
        assert_eq!(
            (&llm["num_attention_heads"], &llm["num_key_value_heads"]),
            (&json!(64), &json!(8))
        );
        let yarn = hf_config(&repo_config("tiny-dense-yarn"));
        assert_eq!(yarn["rope_scaling"]["rope_type"], "yarn");
        assert_eq!(yarn["rope_scaling"]["original_max_position_embeddings"], 64);
        let t = yarn["rope_scaling"]["attention_factor"].as_f64().unwrap();
        assert!((t - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12, "{t}");
    }

    #[test]
    fn dense_gqa_tensor_names_follow_llama() {
        let cfg = repo_config("tiny-dense");
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = Model::new(&vs.root(), &cfg, &Precision::Fp32);
        let names: Vec<String> = named_weights(&vs, &cfg)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let per_layer = [
            "input_layernorm",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "post_attention_layernorm",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ];
        let mut expected: Vec<String> = (0..cfg.n_layers)
            .flat_map(|i| per_layer.map(|t| format!("model.layers.{i}.{t}.weight")))
            .chain(
                [
                    "model.embed_tokens.weight",
                    "model.norm.weight",
                    "lm_head.weight",
                ]
                .map(String::from),
            )
            .collect();
        expected.sort();
        assert_eq!(names, expected);
    }
}
