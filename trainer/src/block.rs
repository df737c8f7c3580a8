//! One transformer layer: pre-norm attention (MLA, or GQA for DeepSeek LLM) and pre-norm FFN
//! (dense SwiGLU in the first layers, MoE after), each with a residual connection.

use tch::{nn, Tensor};

use crate::config::{AttentionKind, ModelConfig};
use crate::expert_parallel::ExpertShard;
use crate::gqa::Gqa;
use crate::kv_cache::LayerCache;
use crate::linear::Precision;
use crate::mla::Mla;
use crate::mlp::Mlp;
use crate::moe::{Moe, MoeStats};
use crate::norm::RmsNorm;
use crate::rope::Rope;
use crate::train::Recompute;

/// The attention of a layer, as `attention` in the model config says.
#[derive(Debug)]
pub enum Attention {
    Mla(Mla),
    Gqa(Gqa),
}

impl Attention {
    fn forward(&self, x: &Tensor, rope: &Rope) -> Tensor {
        match self {
            Attention::Mla(a) => a.forward(x, rope),
            Attention::Gqa(a) => a.forward(x, rope),
        }
    }

    fn forward_cached(&self, x: &Tensor, rope: &Rope, cache: &mut LayerCache) -> Tensor {
        match self {
            Attention::Mla(a) => a.forward_cached(x, rope, cache),
            Attention::Gqa(a) => a.forward_cached(x, rope, cache),
        }
    }
}

#[derive(Debug)]
pub enum Ffn {
    Dense(Mlp),
    Moe(Moe),
}

#[derive(Debug)]
pub struct Block {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Ffn,
    /// What the backward computes again instead of keeping (`recompute`).
    pub recompute: Recompute,
}

impl Block {
    /// Layer `index` of the model (MTP blocks continue the numbering after the last layer), with
    /// the routed experts of `experts` when it is an MoE layer.
    pub fn new(
        path: nn::Path,
        cfg: &ModelConfig,
        index: i64,
        precision: &Precision,
        experts: ExpertShard,
    ) -> Self {
        let mlp = if cfg.is_moe_layer(index) {
            Ffn::Moe(Moe::new(&path / "mlp", cfg, precision, experts))
        } else {
            Ffn::Dense(Mlp::new(
                &path / "mlp",
                cfg.dim,
                cfg.inter_dim,
                cfg.init_std,
                precision,
            ))
        };
        let self_attn = match cfg.attention {
            AttentionKind::Mla => Attention::Mla(Mla::new(&path / "self_attn", cfg, precision)),
            AttentionKind::Gqa => Attention::Gqa(Gqa::new(&path / "self_attn", cfg, precision)),
        };
        Self {
            input_layernorm: RmsNorm::new(&path / "input_layernorm", cfg.dim, cfg.norm_eps),
            self_attn,
            post_attention_layernorm: RmsNorm::new(
                &path / "post_attention_layernorm",
                cfg.dim,
                cfg.norm_eps,
            ),
            mlp,
            recompute: Recompute::None,
        }
    }

    /// Returns the new hidden state and, for MoE layers, the routing statistics. `exempt`: the
    /// sequences MoE never drops while training with a capacity factor (None: drop nothing).
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        exempt: Option<&Tensor>,
    ) -> (Tensor, Option<MoeStats>) {
        match (self.recompute, x.requires_grad()) {
            (Recompute::Block, true) => crate::recompute::block(self, x, rope, exempt),
            (Recompute::Attention, true) => {
                self.ffn(&crate::recompute::attention(self, x, rope), exempt)
            }
            _ => self.forward_kept(x, rope, exempt),
        }
    }

    /// `forward` keeping every activation for the backward.
    pub(crate) fn forward_kept(
        &self,
        x: &Tensor,
        rope: &Rope,
        exempt: Option<&Tensor>,
    ) -> (Tensor, Option<MoeStats>) {
        self.ffn(&self.attention(x, rope), exempt)
    }

    /// x + attention(RMSNorm(x)).
    pub(crate) fn attention(&self, x: &Tensor, rope: &Rope) -> Tensor {
        x + self
            .self_attn
            .forward(&self.input_layernorm.forward(x), rope)
    }

    /// `forward` for new tokens after the positions held in `cache` (incremental decoding).
    pub fn forward_cached(&self, x: &Tensor, rope: &Rope, cache: &mut LayerCache) -> Tensor {
        let x = x + self
            .self_attn
            .forward_cached(&self.input_layernorm.forward(x), rope, cache);
        self.ffn(&x, None).0
    }

    /// x + FFN(RMSNorm(x)): a token the MoE dropped keeps x (and the shared experts' output).
    fn ffn(&self, x: &Tensor, exempt: Option<&Tensor>) -> (Tensor, Option<MoeStats>) {
        let normed = self.post_attention_layernorm.forward(x);
        match &self.mlp {
            Ffn::Dense(mlp) => (x + mlp.forward(&normed), None),
            Ffn::Moe(moe) => {
                let (y, stats) = moe.forward(&normed, exempt);
                (x + y, Some(stats))
            }
        }
    }
}
