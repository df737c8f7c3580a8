//! Size report computed from the config alone (nothing allocated), so it works for the 671B shapes:
//! total and activated parameters, the model's KV-cache bytes per token against MHA/GQA, FLOPs
//! per token.

use serde::Serialize;

use crate::config::{AttentionKind, ModelConfig};

/// KV heads of the grouped-query-attention baseline in the cache comparison (Llama-style).
pub const GQA_KV_HEADS: u64 = 8;
/// Bytes per cached element (BF16 cache).
const CACHE_BYTES: u64 = 2;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelInfo {
    pub name: String,
    /// The model's attention: "MLA", "GQA-<n_kv_heads>" or "MHA".
    pub attention: String,
    /// Main model: embedding, layers, final norm, output head (no MTP).
    pub total_params: u64,
    /// Parameters used per token by the main model: everything but the embedding table and the
    /// experts not chosen (the convention of the DeepSeek reports).
    pub activated_params: u64,
    pub embedding_params: u64,
    /// MTP modules without the embedding and head they share with the main model.
    pub mtp_params: u64,
    /// Routed experts of the main model and the MTP modules (what expert parallelism divides).
    pub routed_expert_params: u64,
    /// Tensors in a public-style checkpoint: main model + MTP, whose layers repeat the shared
    /// embedding and head.
    pub checkpoint_params: u64,
    /// The model's own cache, BF16: MLA's (kv_lora_rank + qk_rope_head_dim) per layer, or
    /// GQA's n_kv_heads·2·head_dim.
    pub kv_cache_bytes_per_token: u64,
    /// Same heads and head dims with plain multi-head attention (full K and V per head), BF16.
    pub mha_kv_cache_bytes_per_token: u64,
    /// Grouped-query attention with `GQA_KV_HEADS` KV heads, BF16.
    pub gqa_kv_cache_bytes_per_token: u64,
    /// Sequence length the attention FLOPs are counted at.
    pub seq_len: i64,
    /// Forward FLOPs per token of the main model: 2·activated matmul params + attention scores.
    pub forward_flops_per_token: f64,
    /// Training FLOPs per token, the MFU numerator, in torchtitan's convention for DeepSeek-V3
    /// (`get_moe_model_nparams_and_flops`): 6 FLOPs (forward 2, backward 4) per activated
    /// non-embedding parameter — routed experts counted k of E, the router and the output head
    /// included — plus 6·H·(d_qk + d_v)·T per layer for the attention scores and the weighted sum
    /// over the full window T (causal masking not discounted, recomputation not counted). The MTP
    /// modules are counted the same way (a block, `eh_proj`, norms and the shared head), which
    /// torchtitan, having no MTP, leaves out.
    pub train_flops_per_token: f64,
}

struct Counts {
    total: u64,
    active: u64,
    routed: u64,
}

fn attention(c: &ModelConfig) -> u64 {
    let (d, h) = (c.dim as u64, c.n_heads as u64);
    let qk = c.qk_head_dim() as u64;
    if c.attention == AttentionKind::Gqa {
        let kv = c.kv_heads() as u64;
        return d * h * qk + 2 * d * kv * qk + h * qk * d;
    }
    let q = if c.q_lora_rank == 0 {
        d * h * qk
    } else {
        let r = c.q_lora_rank as u64;
        d * r + r + r * h * qk
    };
    let kv_lora = c.kv_lora_rank as u64;
    let kv = d * (kv_lora + c.qk_rope_head_dim as u64)
        + kv_lora
        + kv_lora * h * (c.qk_nope_head_dim + c.v_head_dim) as u64;
    q + kv + h * c.v_head_dim as u64 * d
}

/// One block (layer `index`): attention, two norms, and the dense MLP or the MoE.
fn block(c: &ModelConfig, index: i64) -> Counts {
    let d = c.dim as u64;
    let common = attention(c) + 2 * d;
    if c.is_moe_layer(index) {
        let expert = 3 * d * c.moe_inter_dim as u64;
        let (e, k, shared) = (
            c.n_routed_experts as u64,
            c.n_activated_experts as u64,
            c.n_shared_experts as u64,
        );
        let gate = e * d;
        Counts {
            total: common + gate + (e + shared) * expert,
            active: common + gate + (k + shared) * expert,
            routed: e * expert,
        }
    } else {
        let mlp = 3 * d * c.inter_dim as u64;
        Counts {
            total: common + mlp,
            active: common + mlp,
            routed: 0,
        }
    }
}

/// Sizes of the model described by `cfg`, with attention FLOPs counted at `seq_len`.
pub fn model_info(c: &ModelConfig, seq_len: i64) -> ModelInfo {
    let (d, v, l) = (c.dim as u64, c.vocab_size as u64, c.n_layers as u64);
    let embedding = v * d;
    let head = if c.tie_embeddings { 0 } else { v * d };
    let layers: Vec<Counts> = (0..c.n_layers).map(|i| block(c, i)).collect();
    let layers_total: u64 = layers.iter().map(|b| b.total).sum();
    let layers_active: u64 = layers.iter().map(|b| b.active).sum();
    let total = embedding + layers_total + d + head;
    let activated = layers_active + d + v * d;

    let mtp_blocks: Vec<Counts> = (0..c.mtp_depth).map(|k| block(c, c.n_layers + k)).collect();
    let mtp_extra = 2 * d + 2 * d * d + d;
    let mtp_params: u64 = mtp_blocks.iter().map(|b| b.total + mtp_extra).sum();
    let mtp_active: u64 = mtp_blocks
        .iter()
        .map(|b| b.active + mtp_extra + v * d)
        .sum();
    let depth = c.mtp_depth as u64;
    let routed = layers.iter().chain(&mtp_blocks).map(|b| b.routed).sum();

    let h = c.n_heads as u64;
    let kv_dims = (c.qk_head_dim() + c.value_head_dim()) as u64;
    let (attention, own_cache) = match c.attention {
        AttentionKind::Mla => (
            "MLA".to_string(),
            (c.kv_lora_rank + c.qk_rope_head_dim) as u64,
        ),
        AttentionKind::Gqa if c.kv_heads() == c.n_heads => ("MHA".to_string(), h * kv_dims),
        AttentionKind::Gqa => (
            format!("GQA-{}", c.kv_heads()),
            c.kv_heads() as u64 * kv_dims,
        ),
    };
    // Per layer and token: q·kᵀ and p·v over seq_len positions (full window, as in PaLM's MFU).
    let attn_flops = 2.0 * (h * kv_dims) as f64 * seq_len as f64;
    let forward = 2.0 * activated as f64 + l as f64 * attn_flops;
    let mtp_forward = 2.0 * mtp_active as f64 + depth as f64 * attn_flops;
    ModelInfo {
        name: c.name.clone(),
        attention,
        total_params: total,
        activated_params: activated,
        embedding_params: embedding,
        mtp_params,
        routed_expert_params: routed,
        checkpoint_params: total + mtp_params + depth * 2 * v * d,
        kv_cache_bytes_per_token: l * own_cache * CACHE_BYTES,
        mha_kv_cache_bytes_per_token: l * h * kv_dims * CACHE_BYTES,
        gqa_kv_cache_bytes_per_token: l * GQA_KV_HEADS.min(h) * kv_dims * CACHE_BYTES,
        seq_len,
        forward_flops_per_token: forward,
        train_flops_per_token: 3.0 * (forward + mtp_forward),
    }
}

fn human(n: f64, unit: &str) -> String {
    let (scale, suffix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(s, _)| n >= *s)
        .unwrap_or((1.0, ""));
    format!("{:.2} {suffix}{unit}", n / scale)
}

impl ModelInfo {
    /// The human-readable report printed by `whale model info`.
    pub fn render(&self) -> String {
        let p = |n: u64| human(n as f64, "");
        let b = |n: u64| human(n as f64, "B");
        let ratio = |n: u64| n as f64 / self.kv_cache_bytes_per_token as f64;
        format!(
            "model {}\n\
             parameters     total {} (embedding {}), activated per token {}\n\
             MTP modules    {} (checkpoint with MTP: {})\n\
             KV cache/token {} {} | MHA {} ({:.1}x) | GQA-{} {} ({:.1}x)\n\
             FLOPs/token    forward {} | training incl. MTP {} (attention at seq {})",
            self.name,
            p(self.total_params),
            p(self.embedding_params),
            p(self.activated_params),
            p(self.mtp_params),
            p(self.checkpoint_params),
            self.attention,
            b(self.kv_cache_bytes_per_token),
            b(self.mha_kv_cache_bytes_per_token),
            ratio(self.mha_kv_cache_bytes_per_token),
            GQA_KV_HEADS,
            b(self.gqa_kv_cache_bytes_per_token),
            ratio(self.gqa_kv_cache_bytes_per_token),
            human(self.forward_flops_per_token, "FLOP"),
            human(self.train_flops_per_token, "FLOP"),
            self.seq_len,
        )
    }
}

#[cfg(test)]
mod tests {
    use tch::{nn, Device};

    use super::*;
    use crate::linear::Precision;
    use crate::model::Model;
    use crate::testing::{repo_config, tiny_config};

    fn billions(n: u64) -> f64 {
        n as f64 / 1e9
    }

    #[test]
    fn deepseek_v3_matches_published_sizes() {
        let i = model_info(&repo_config("deepseek-v3"), 4096);
        assert!(
            (670.0..672.5).contains(&billions(i.total_params)),
            "total {}",
            i.total_params
        );
        assert!(
            (36.5..37.9).contains(&billions(i.activated_params)),
            "activated {}",
            i.activated_params
        );
        assert!(
            (684.0..686.5).contains(&billions(i.checkpoint_params)),
            "with MTP {}",
            i.checkpoint_params
        );
        // 61 layers × 576 cached numbers × 2 bytes.
        assert_eq!(i.kv_cache_bytes_per_token, 61 * 576 * 2);
        assert!(i.mha_kv_cache_bytes_per_token > 60 * i.kv_cache_bytes_per_token);
    }

    #[test]
    fn deepseek_v2_lite_matches_published_sizes() {
        let i = model_info(&repo_config("deepseek-v2-lite"), 4096);
        assert!(
            (15.5..16.0).contains(&billions(i.total_params)),
            "total {}",
            i.total_params
        );
        assert!(
            (2.3..2.55).contains(&billions(i.activated_params)),
            "activated {}",
            i.activated_params
        );
        assert_eq!(i.mtp_params, 0);
    }

    /// The MFU numerator of `tiny` at T = 64, counted by hand from configs/model/tiny.toml.
    #[test]
    fn tiny_training_flops_match_a_hand_count() {
        let (d, v, h, t) = (64u64, 8192u64, 4u64, 64u64);
        // MLA: wq_a 64·32 + q_norm 32 + wq_b 32·4·24; wkv_a 64·40 + kv_norm 32 + wkv_b 32·4·32;
        // wo 4·16·64; plus the block's two norms.
        let attention = (2048 + 32 + 3072) + (2560 + 32 + 4096) + 4096 + 2 * d;
        let dense = attention + 3 * 64 * 192;
        // Router 8·64, and k = 2 routed + 1 shared experts of 3·64·32 each.
        let moe = attention + 8 * 64 + 3 * (3 * 64 * 32);
        // Plus the final norm and the output head (the embedding is excluded).
        let main = dense + moe + d + v * d;
        // MTP: enorm, hnorm, eh_proj 2d·d, shared_head.norm, an MoE block, the shared head.
        let mtp = (2 * d + 2 * d * d + d) + moe + v * d;
        // 3 attention layers (2 main + 1 MTP), each 2 matmuls of H·(24 + 16) over T positions.
        let attention_flops = 3 * 2 * h * (24 + 16) * t;
        let hand = 3 * (2 * (main + mtp) + attention_flops);
        assert_eq!(hand, 7_264_128);
        let counted = model_info(&tiny_config(), t as i64).train_flops_per_token;
        assert_eq!(counted, hand as f64);
    }

    #[test]
    fn deepseek_v2_matches_published_sizes() {
        let i = model_info(&repo_config("deepseek-v2"), 4096);
        assert!(
            (235.0..236.5).contains(&billions(i.total_params)),
            "total {}",
            i.total_params
        );
        assert!(
            (20.5..21.5).contains(&billions(i.activated_params)),
            "activated {}",
            i.activated_params
        );
    }

    /// DeepSeek LLM (arXiv 2401.02954, Table 2): 7B has 6.9B parameters with multi-head
    /// attention, 67B has 67.4B with 8 KV heads; neither ties the embedding.
    #[test]
    fn deepseek_llm_matches_published_sizes() {
        let i7 = model_info(&repo_config("deepseek-llm-7b"), 4096);
        assert!(
            (6.85..6.95).contains(&billions(i7.total_params)),
            "7B total {}",
            i7.total_params
        );
        assert_eq!(i7.attention, "MHA");
        // 30 layers × K and V of 32 heads × 128 × 2 bytes.
        assert_eq!(i7.kv_cache_bytes_per_token, 30 * 2 * 32 * 128 * 2);
        let i67 = model_info(&repo_config("deepseek-llm-67b"), 4096);
        assert!(
            (67.35..67.45).contains(&billions(i67.total_params)),
            "67B total {}",
            i67.total_params
        );
        assert_eq!(i67.attention, "GQA-8");
        assert_eq!(i67.kv_cache_bytes_per_token, 95 * 2 * 8 * 128 * 2);
        assert_eq!(
            i67.mha_kv_cache_bytes_per_token,
            8 * i67.kv_cache_bytes_per_token
        );
        // Dense: every parameter but the embedding is used by every token.
        assert_eq!(
            i67.activated_params,
            i67.total_params - i67.embedding_params
        );
    }

    #[test]
    fn counts_match_the_built_tiny_models() {
        for cfg in [tiny_config(), repo_config("tiny-dense")] {
            let vs = nn::VarStore::new(Device::Cpu);
            let _model = Model::new(&vs.root(), &cfg, &Precision::Fp32);
            let built: i64 = vs
                .trainable_variables()
                .iter()
                .map(|t| t.numel() as i64)
                .sum();
            let i = model_info(&cfg, 64);
            assert_eq!(built as u64, i.total_params + i.mtp_params, "{}", cfg.name);
        }
    }
}
