//! The one model configuration: every shape of the DeepSeek family, from the CPU toy to the 671B
//! model, named like `ModelArgs` in DeepSeek-V3 `inference/model.py`. `attention` and `ffn` select
//! the generation: MLA + MoE (V2/V3) or grouped-query attention + dense SwiGLU (DeepSeek LLM).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// How the router turns gate logits into affinities: softmax over experts (DeepSeek-V2) or an
/// independent sigmoid per expert (DeepSeek-V3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreFunc {
    Softmax,
    Sigmoid,
}

/// The attention of every layer: DeepSeek-V2/V3's multi-head latent attention, or the grouped-query
/// attention of DeepSeek LLM 67B (and multi-head attention, 7B, as the case n_kv_heads = n_heads).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKind {
    #[default]
    Mla,
    Gqa,
}

/// The feed-forward network of the layers after the first `n_dense_layers`: DeepSeekMoE, or the
/// dense SwiGLU MLP everywhere (DeepSeek LLM).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FfnKind {
    #[default]
    Moe,
    Dense,
}

/// Shapes and hyper-parameters of a DeepSeek-family model, read from `configs/model/*.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Human-readable name, reported by `whale model info` and written to checkpoints.
    pub name: String,
    pub vocab_size: i64,
    /// Hidden size d.
    pub dim: i64,
    /// Width of the dense SwiGLU MLP of the first `n_dense_layers` layers.
    pub inter_dim: i64,
    /// Width of one routed (and one shared) expert.
    #[serde(default)]
    pub moe_inter_dim: i64,
    pub n_layers: i64,
    /// The first `n_dense_layers` layers use a dense MLP instead of MoE.
    #[serde(default)]
    pub n_dense_layers: i64,
    pub n_heads: i64,
    /// "mla" (the default) or "gqa"; the MLA fields below are unused with "gqa".
    #[serde(default)]
    pub attention: AttentionKind,
    /// Key/value heads of grouped-query attention (n_heads = multi-head attention); each serves
    /// n_heads / n_kv_heads query heads of width dim / n_heads.
    #[serde(default)]
    pub n_kv_heads: Option<i64>,
    /// "moe" (the default: MoE after the first `n_dense_layers`) or "dense" (every layer dense;
    /// the MoE fields below are then unused).
    #[serde(default)]
    pub ffn: FfnKind,
    #[serde(default)]
    pub n_routed_experts: i64,
    #[serde(default)]
    pub n_shared_experts: i64,
    /// Routed experts chosen per token (K_r).
    #[serde(default)]
    pub n_activated_experts: i64,
    /// Experts are split into this many groups for group-limited routing (1 = no limit).
    #[serde(default = "defaults::one")]
    pub n_expert_groups: i64,
    /// Tokens may only be routed to experts of this many groups.
    #[serde(default = "defaults::one")]
    pub n_limited_groups: i64,
    /// Device-limited routing (DeepSeek-V2): the routed experts are spread over this many devices,
    /// expert e on device e / (n_routed_experts / n_devices), whatever the actual number of ranks
    /// (1 = no limit) ...
    #[serde(default = "defaults::one")]
    pub n_devices: i64,
    /// ... and a token may reach the experts of at most this many devices (M), those holding its
    /// highest affinities.
    #[serde(default = "defaults::one")]
    pub n_limited_devices: i64,
    /// Token dropping while training (DeepSeek-V2): each device computes at most
    /// capacity_factor × its balanced share of the token-to-expert assignments, dropping those of
    /// lowest affinity (they pass through the residual); 0 drops nothing. Evaluation and inference
    /// never drop.
    #[serde(default)]
    pub capacity_factor: f64,
    /// α2 of DeepSeek-V2's device-level balance loss (0.05 in V2; 0 = off).
    #[serde(default)]
    pub device_balance_alpha: f64,
    /// α3 of DeepSeek-V2's communication balance loss (0.02 in V2; 0 = off).
    #[serde(default)]
    pub comm_balance_alpha: f64,
    #[serde(default = "defaults::score_func")]
    pub score_func: ScoreFunc,
    /// Multiplies the routing weights of the chosen experts.
    #[serde(default = "defaults::route_scale")]
    pub route_scale: f64,
    /// Rank of the low-rank query compression; 0 means a plain full-rank query projection.
    #[serde(default)]
    pub q_lora_rank: i64,
    /// Rank of the joint KV compression c_kv (the cached latent).
    #[serde(default)]
    pub kv_lora_rank: i64,
    #[serde(default)]
    pub qk_nope_head_dim: i64,
    #[serde(default)]
    pub qk_rope_head_dim: i64,
    #[serde(default)]
    pub v_head_dim: i64,
    /// Longest sequence the RoPE tables cover (training sequence length must not exceed it).
    pub max_seq_len: i64,
    /// Context length of the pre-YaRN model; YaRN stretches RoPE when `max_seq_len` exceeds it.
    #[serde(default = "defaults::original_seq_len")]
    pub original_seq_len: i64,
    #[serde(default = "defaults::rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "defaults::rope_factor")]
    pub rope_factor: f64,
    #[serde(default = "defaults::beta_fast")]
    pub beta_fast: f64,
    #[serde(default = "defaults::beta_slow")]
    pub beta_slow: f64,
    #[serde(default = "defaults::mscale")]
    pub mscale: f64,
    /// Number of sequential multi-token-prediction modules (D); 0 disables MTP.
    #[serde(default)]
    pub mtp_depth: i64,
    #[serde(default = "defaults::norm_eps")]
    pub norm_eps: f64,
    /// Standard deviation of the normal init of every weight matrix (0.006 in DeepSeek-V3).
    #[serde(default = "defaults::init_std")]
    pub init_std: f64,
    /// Share the output head with the input embedding.
    #[serde(default)]
    pub tie_embeddings: bool,
}

mod defaults {
    use super::ScoreFunc;

    pub fn one() -> i64 {
        1
    }
    pub fn score_func() -> ScoreFunc {
        ScoreFunc::Softmax
    }
    pub fn route_scale() -> f64 {
        1.0
    }
    pub fn original_seq_len() -> i64 {
        4096
    }
    pub fn rope_theta() -> f64 {
        10000.0
    }
    pub fn rope_factor() -> f64 {
        40.0
    }
    pub fn beta_fast() -> f64 {
        32.0
    }
    pub fn beta_slow() -> f64 {
        1.0
    }
    pub fn mscale() -> f64 {
        1.0
    }
    pub fn norm_eps() -> f64 {
        1e-6
    }
    pub fn init_std() -> f64 {
        0.006
    }
}

impl ModelConfig {
    /// Reads and validates a TOML model config.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading model config {}", path.display()))?;
        let cfg: Self = toml::from_str(&text)
            .with_context(|| format!("parsing model config {}", path.display()))?;
        cfg.validate()
            .with_context(|| format!("invalid model config {}", path.display()))?;
        Ok(cfg)
    }

    /// Rejects shapes the model cannot be built with, with a message naming the field.
    pub fn validate(&self) -> Result<()> {
        let mut positive = vec![
            ("vocab_size", self.vocab_size),
            ("dim", self.dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("max_seq_len", self.max_seq_len),
            ("n_expert_groups", self.n_expert_groups),
            ("n_limited_groups", self.n_limited_groups),
        ];
        match self.attention {
            AttentionKind::Mla => positive.extend([
                ("kv_lora_rank", self.kv_lora_rank),
                ("qk_nope_head_dim", self.qk_nope_head_dim),
                ("qk_rope_head_dim", self.qk_rope_head_dim),
                ("v_head_dim", self.v_head_dim),
            ]),
            AttentionKind::Gqa => positive.push(("n_kv_heads", self.kv_heads())),
        }
        for (name, v) in positive {
            if v <= 0 {
                bail!("{name} must be positive, got {v}");
            }
        }
        if self.attention == AttentionKind::Gqa {
            if self.dim % self.n_heads != 0 {
                bail!(
                    "attention = \"gqa\" splits dim ({}) into n_heads ({}) heads: make dim a multiple of n_heads",
                    self.dim,
                    self.n_heads
                );
            }
            if self.n_heads % self.kv_heads() != 0 {
                bail!(
                    "n_heads ({}) must be a multiple of n_kv_heads ({}): each KV head serves a whole group of query heads",
                    self.n_heads,
                    self.kv_heads()
                );
            }
            if self.has_moe() {
                bail!("attention = \"gqa\" is DeepSeek LLM's dense decoder: set ffn = \"dense\" (MoE layers use attention = \"mla\")");
            }
        } else if self.n_kv_heads.is_some() {
            bail!("n_kv_heads applies to attention = \"gqa\" only (MLA has no separate KV heads)");
        }
        if self.rope_dim() % 2 != 0 {
            bail!(
                "the RoPE width ({}) must be even (RoPE rotates pairs)",
                self.rope_dim()
            );
        }
        if !(0..=self.n_layers).contains(&self.n_dense_layers) {
            bail!("n_dense_layers must be in 0..=n_layers");
        }
        if (self.n_dense_layers > 0 || self.ffn == FfnKind::Dense) && self.inter_dim <= 0 {
            bail!("inter_dim must be positive when there are dense layers");
        }
        if self.has_moe() {
            if self.moe_inter_dim <= 0 || self.n_activated_experts <= 0 {
                bail!("MoE layers need moe_inter_dim and n_activated_experts > 0");
            }
            if self.n_routed_experts % self.n_expert_groups != 0 {
                bail!("n_routed_experts must be a multiple of n_expert_groups");
            }
            if self.n_expert_groups > 1 && self.n_routed_experts / self.n_expert_groups < 2 {
                bail!("group-limited routing scores a group by its top-2 experts: need >= 2 per group");
            }
            if self.n_limited_groups > self.n_expert_groups {
                bail!("n_limited_groups must not exceed n_expert_groups");
            }
            let reachable = self.n_limited_groups * (self.n_routed_experts / self.n_expert_groups);
            if self.n_activated_experts > reachable {
                bail!(
                    "n_activated_experts ({}) exceeds the experts of the kept groups ({reachable})",
                    self.n_activated_experts
                );
            }
            if self.n_devices <= 0 || self.n_routed_experts % self.n_devices != 0 {
                bail!(
                    "n_devices ({}) must divide n_routed_experts ({}): each device holds an equal share",
                    self.n_devices,
                    self.n_routed_experts
                );
            }
            if !(1..=self.n_devices).contains(&self.n_limited_devices) {
                bail!(
                    "n_limited_devices must be in 1..=n_devices ({})",
                    self.n_devices
                );
            }
            let reachable = self.n_limited_devices * (self.n_routed_experts / self.n_devices);
            if self.n_activated_experts > reachable {
                bail!(
                    "n_activated_experts ({}) exceeds the experts of n_limited_devices devices ({reachable}): raise n_limited_devices",
                    self.n_activated_experts
                );
            }
            let coefficients = [
                ("capacity_factor", self.capacity_factor),
                ("device_balance_alpha", self.device_balance_alpha),
                ("comm_balance_alpha", self.comm_balance_alpha),
            ];
            if let Some((name, v)) = coefficients.iter().find(|(_, v)| v.is_nan() || *v < 0.0) {
                bail!("{name} must be 0 (off) or positive, got {v}");
            }
        }
        if self.mtp_depth < 0 || self.q_lora_rank < 0 || self.n_shared_experts < 0 {
            bail!("mtp_depth, q_lora_rank and n_shared_experts must not be negative");
        }
        Ok(())
    }

    /// Whether any layer uses MoE (the MTP block does whenever the last layer does).
    pub fn has_moe(&self) -> bool {
        self.is_moe_layer(self.n_layers - 1)
    }

    /// Whether main-model layer `i` (or an MTP block, indexed from `n_layers`) is an MoE layer.
    pub fn is_moe_layer(&self, i: i64) -> bool {
        self.ffn == FfnKind::Moe && i >= self.n_dense_layers && self.n_routed_experts > 0
    }

    /// Key/value heads of grouped-query attention (defaults to n_heads: multi-head attention).
    pub fn kv_heads(&self) -> i64 {
        self.n_kv_heads.unwrap_or(self.n_heads)
    }

    /// Per-head query/key width: MLA's no-RoPE part plus its RoPE part, or the GQA head width.
    pub fn qk_head_dim(&self) -> i64 {
        match self.attention {
            AttentionKind::Mla => self.qk_nope_head_dim + self.qk_rope_head_dim,
            AttentionKind::Gqa => self.dim / self.n_heads,
        }
    }

    /// Per-head value width.
    pub fn value_head_dim(&self) -> i64 {
        match self.attention {
            AttentionKind::Mla => self.v_head_dim,
            AttentionKind::Gqa => self.dim / self.n_heads,
        }
    }

    /// Width RoPE rotates: MLA's decoupled RoPE key, or the whole GQA head.
    pub fn rope_dim(&self) -> i64 {
        match self.attention {
            AttentionKind::Mla => self.qk_rope_head_dim,
            AttentionKind::Gqa => self.dim / self.n_heads,
        }
    }

    /// Whether RoPE is stretched with YaRN (only when training beyond the original context).
    pub fn uses_yarn(&self) -> bool {
        self.max_seq_len > self.original_seq_len
    }

    /// Attention softmax scale: qk_head_dim^-0.5, times mscale² under YaRN (DeepSeek's form of
    /// YaRN's attention temperature; transformers scales cos and sin by mscale instead).
    pub fn softmax_scale(&self) -> f64 {
        let base = (self.qk_head_dim() as f64).powf(-0.5);
        if self.uses_yarn() {
            base * self.yarn_mscale().powi(2)
        } else {
            base
        }
    }

    /// YaRN's attention temperature factor √(1/t) = 0.1·mscale·ln(rope_factor) + 1.
    pub fn yarn_mscale(&self) -> f64 {
        0.1 * self.mscale * self.rope_factor.ln() + 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::repo_config;

    #[test]
    fn shipped_configs_parse_and_validate() {
        for name in [
            "tiny",
            "tiny-dense",
            "tiny-dense-yarn",
            "tiny-v2",
            "small",
            "deepseek-llm-7b",
            "deepseek-llm-67b",
            "deepseek-v2-lite",
            "deepseek-v2",
            "deepseek-v2-128k",
            "deepseek-v3",
        ] {
            repo_config(name);
        }
        for name in [
            "train",
            "train-extend",
            "train-deepseek-v2",
            "train-v2-demo",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../configs/{name}.toml"));
            crate::train::TrainConfig::from_file(&path).unwrap();
        }
        let v2 = repo_config("deepseek-v2");
        assert_eq!((v2.n_devices, v2.n_limited_devices), (8, 3));
        assert_eq!(
            (v2.device_balance_alpha, v2.comm_balance_alpha),
            (0.05, 0.02)
        );
        let llm = repo_config("deepseek-llm-67b");
        assert_eq!(
            (llm.attention, llm.ffn),
            (AttentionKind::Gqa, FfnKind::Dense)
        );
        assert_eq!(
            (llm.n_heads, llm.kv_heads(), llm.qk_head_dim()),
            (64, 8, 128)
        );
        assert!(!llm.has_moe());
        let v3 = repo_config("deepseek-v3");
        assert_eq!((v3.dim, v3.n_layers, v3.n_heads), (7168, 61, 128));
        assert_eq!(v3.score_func, ScoreFunc::Sigmoid);
        assert!(v3.uses_yarn());
    }

    #[test]
    fn validation_names_the_bad_field() {
        let mut cfg = repo_config("tiny");
        cfg.n_limited_groups = cfg.n_expert_groups + 1;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("n_limited_groups"), "{err}");
        let mut gqa = repo_config("tiny-dense");
        gqa.n_kv_heads = Some(3);
        let err = gqa.validate().unwrap_err().to_string();
        assert!(err.contains("multiple of n_kv_heads (3)"), "{err}");
    }
}
