//! Grouped-query attention (Ainslie et al. 2023), the attention of DeepSeek LLM 67B: `n_heads`
//! query heads share `n_kv_heads` key/value heads, query head i reading KV head
//! i / (n_heads / n_kv_heads), which divides the inference cache by the group size. With
//! n_kv_heads = n_heads it is the multi-head attention of DeepSeek LLM 7B. Tensor names and the
//! RoPE layout (rotate-half) are those of transformers' `LlamaAttention`, the released format.

use tch::{nn, Tensor};

use crate::config::ModelConfig;
use crate::kv_cache::LayerCache;
use crate::linear::{Linear, Precision};
use crate::mla::causal_softmax;
use crate::rope::Rope;

#[derive(Debug)]
pub struct Gqa {
    /// dim → n_heads·head_dim.
    pub q_proj: Linear,
    /// dim → n_kv_heads·head_dim.
    pub k_proj: Linear,
    /// dim → n_kv_heads·head_dim.
    pub v_proj: Linear,
    /// n_heads·head_dim → dim.
    pub o_proj: Linear,
    n_heads: i64,
    n_kv_heads: i64,
    head_dim: i64,
    softmax_scale: f64,
}

impl Gqa {
    pub fn new(path: nn::Path, cfg: &ModelConfig, precision: &Precision) -> Self {
        let (d, std) = (cfg.dim, cfg.init_std);
        let (h, kv, hd) = (cfg.n_heads, cfg.kv_heads(), cfg.qk_head_dim());
        Self {
            q_proj: Linear::new(&path / "q_proj", d, h * hd, std, precision),
            k_proj: Linear::new(&path / "k_proj", d, kv * hd, std, precision),
            v_proj: Linear::new(&path / "v_proj", d, kv * hd, std, precision),
            o_proj: Linear::new(&path / "o_proj", h * hd, d, std, precision),
            n_heads: h,
            n_kv_heads: kv,
            head_dim: hd,
            softmax_scale: cfg.softmax_scale(),
        }
    }

    /// Query heads per KV head.
    fn group(&self) -> i64 {
        self.n_heads / self.n_kv_heads
    }

    /// Rotated queries `[b, s, n_heads, hd]`, rotated keys and values `[b, s, n_kv_heads, hd]` of
    /// `x` at positions `start..start + seq`.
    fn project(&self, x: &Tensor, rope: &Rope, start: i64) -> (Tensor, Tensor, Tensor) {
        let (b, s, _) = x
            .size3()
            .expect("attention input must be [batch, seq, dim]");
        let heads = |proj: &Linear, n: i64| proj.forward(x).view([b, s, n, self.head_dim]);
        (
            rope.apply_from(&heads(&self.q_proj, self.n_heads), start),
            rope.apply_from(&heads(&self.k_proj, self.n_kv_heads), start),
            heads(&self.v_proj, self.n_kv_heads),
        )
    }

    /// `[b, s, n_kv_heads, hd]` → `[b, n_heads, s, hd]`, each KV head repeated for its group of
    /// query heads (transformers' `repeat_kv`), so any SDPA backend can run it.
    fn repeat_kv(&self, t: &Tensor) -> Tensor {
        let (b, s, kv, hd) = t.size4().expect("[b, s, kv_heads, hd]");
        t.transpose(1, 2)
            .unsqueeze(2)
            .expand([b, kv, self.group(), s, hd], false)
            .reshape([b, kv * self.group(), s, hd])
    }

    /// Causal self-attention over `x` of shape `[batch, seq, dim]`.
    pub fn forward(&self, x: &Tensor, rope: &Rope) -> Tensor {
        let (b, s, _) = x
            .size3()
            .expect("attention input must be [batch, seq, dim]");
        let (q, k, v) = self.project(x, rope, 0);
        let out = Tensor::scaled_dot_product_attention::<Tensor>(
            &q.transpose(1, 2),
            &self.repeat_kv(&k),
            &self.repeat_kv(&v),
            None,
            0.0,
            true,
            self.softmax_scale,
            false,
        );
        self.o_proj.forward(
            &out.transpose(1, 2)
                .reshape([b, s, self.n_heads * self.head_dim]),
        )
    }

    /// Attention of the new tokens `x [b, s, dim]` (positions `cache.len()..`) over every cached
    /// position and themselves; the cache holds the `n_kv_heads` keys and values only.
    pub fn forward_cached(&self, x: &Tensor, rope: &Rope, cache: &mut LayerCache) -> Tensor {
        let (b, s, _) = x
            .size3()
            .expect("attention input must be [batch, seq, dim]");
        let start = cache.len();
        let (q, k, v) = self.project(x, rope, start);
        let (k, v) = cache.append(&k, &v);
        let q = q.view([b, s, self.n_kv_heads, self.group(), self.head_dim]);
        let scores = Tensor::einsum("bskgd,btkd->bskgt", &[&q, &k], None::<i64>).reshape([
            b,
            s,
            self.n_heads,
            -1,
        ]) * self.softmax_scale;
        let probs = causal_softmax(&scores, start).to_kind(x.kind()).view([
            b,
            s,
            self.n_kv_heads,
            self.group(),
            -1,
        ]);
        let out = Tensor::einsum("bskgt,btkd->bskgd", &[&probs, &v], None::<i64>);
        self.o_proj
            .forward(&out.reshape([b, s, self.n_heads * self.head_dim]))
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;
    use crate::testing::repo_config;

    /// Per query head h: softmax(q_h k_{h/group}ᵀ·scale + causal mask) v_{h/group}, one head at a
    /// time with plain matmuls.
    fn naive_grouped_attention(gqa: &Gqa, x: &Tensor, rope: &Rope) -> Tensor {
        let (b, s, _) = x.size3().unwrap();
        let (q, k, v) = gqa.project(x, rope, 0);
        let future = Tensor::ones([s, s], (Kind::Bool, Device::Cpu)).triu(1);
        let heads: Vec<Tensor> = (0..gqa.n_heads)
            .map(|h| {
                let kv = h / (gqa.n_heads / gqa.n_kv_heads);
                let (qh, kh, vh) = (q.select(2, h), k.select(2, kv), v.select(2, kv));
                let scores = qh.matmul(&kh.transpose(-2, -1)) * gqa.softmax_scale;
                scores
                    .masked_fill(&future, f64::NEG_INFINITY)
                    .softmax(-1, Kind::Float)
                    .matmul(&vh)
            })
            .collect();
        let out = Tensor::stack(&heads, 2).reshape([b, s, -1]);
        gqa.o_proj.forward(&out)
    }

    #[test]
    fn equals_naive_grouped_attention() {
        let mut cfg = repo_config("tiny-dense");
        cfg.init_std = 0.1;
        // Grouped (the config's 4 query heads on 2 KV heads), multi-head, and multi-query.
        for kv_heads in [2, 4, 1] {
            cfg.n_kv_heads = Some(kv_heads);
            tch::manual_seed(3);
            let vs = nn::VarStore::new(Device::Cpu);
            let gqa = Gqa::new(vs.root() / "attn", &cfg, &Precision::Fp32);
            let rope = Rope::new(&cfg, Device::Cpu);
            let x = Tensor::randn([2, 12, cfg.dim], (Kind::Float, Device::Cpu));
            let fast = gqa.forward(&x, &rope);
            let slow = naive_grouped_attention(&gqa, &x, &rope);
            assert_eq!(fast.size(), vec![2, 12, cfg.dim]);
            let err = (&fast - &slow).abs().max().double_value(&[]);
            assert!(err < 1e-5, "{kv_heads} KV heads: max error {err}");
            let scale = slow.abs().max().double_value(&[]);
            assert!(scale > 1e-3, "attention output vanished: {scale}");
        }
    }
}
