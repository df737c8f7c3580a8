//! Multi-token prediction (DeepSeek-V3 §2.2): module k combines the previous depth's hidden state
//! h^{k-1}_i with the embedding of token t_{i+k}, runs one transformer block, and predicts
//! t_{i+k+1} through the shared output head. They add training signal, and at inference they
//! draft tokens for speculative decoding (`forward_cached`). Names follow the public checkpoint,
//! where module k is layer `n_layers + k - 1`.

use tch::{nn, Tensor};

use crate::block::Block;
use crate::config::ModelConfig;
use crate::expert_parallel::ExpertShard;
use crate::kv_cache::LayerCache;
use crate::linear::{Linear, Precision};
use crate::moe::MoeStats;
use crate::norm::RmsNorm;
use crate::rope::Rope;

#[derive(Debug)]
pub struct MtpModule {
    /// RMSNorm of the next token's embedding.
    pub enorm: RmsNorm,
    /// RMSNorm of the previous depth's hidden state.
    pub hnorm: RmsNorm,
    /// 2d → d projection of `[enorm(emb); hnorm(h)]` — embedding half first, as in the checkpoint.
    pub eh_proj: Linear,
    pub block: Block,
    /// Final norm before the shared output head (`shared_head.norm`).
    pub shared_head_norm: RmsNorm,
}

impl MtpModule {
    /// `path` is the module's layer, e.g. `model.layers.61`; its block holds the routed experts of
    /// `experts`.
    pub fn new(
        path: nn::Path,
        cfg: &ModelConfig,
        layer_index: i64,
        precision: &Precision,
        experts: ExpertShard,
    ) -> Self {
        let enorm = RmsNorm::new(&path / "enorm", cfg.dim, cfg.norm_eps);
        let hnorm = RmsNorm::new(&path / "hnorm", cfg.dim, cfg.norm_eps);
        let eh_proj = Linear::new(
            &path / "eh_proj",
            2 * cfg.dim,
            cfg.dim,
            cfg.init_std,
            precision,
        );
        let shared_head_norm = RmsNorm::new(&path / "shared_head" / "norm", cfg.dim, cfg.norm_eps);
        let block = Block::new(path, cfg, layer_index, precision, experts);
        Self {
            enorm,
            hnorm,
            eh_proj,
            block,
            shared_head_norm,
        }
    }

    /// h^k from h^{k-1} (`[b, s, d]`) and the embeddings of the tokens k positions ahead.
    pub fn forward(
        &self,
        prev_hidden: &Tensor,
        next_embedding: &Tensor,
        rope: &Rope,
        exempt: Option<&Tensor>,
    ) -> (Tensor, Option<MoeStats>) {
        self.block
            .forward(&self.join(prev_hidden, next_embedding), rope, exempt)
    }

    /// `forward` for new positions after those held in `cache` (drafting while decoding).
    pub fn forward_cached(
        &self,
        prev_hidden: &Tensor,
        next_embedding: &Tensor,
        rope: &Rope,
        cache: &mut LayerCache,
    ) -> Tensor {
        self.block
            .forward_cached(&self.join(prev_hidden, next_embedding), rope, cache)
    }

    /// h′ = M·[RMSNorm(Emb(t_{i+k})); RMSNorm(h^{k−1}_i)].
    fn join(&self, prev_hidden: &Tensor, next_embedding: &Tensor) -> Tensor {
        let joined = Tensor::cat(
            &[
                self.enorm.forward(next_embedding),
                self.hnorm.forward(prev_hidden),
            ],
            -1,
        );
        self.eh_proj.forward(&joined)
    }
}
