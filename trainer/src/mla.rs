//! Multi-head Latent Attention (DeepSeek-V2 §2.1): keys and values are reconstructed from one
//! compressed latent c_kv per token, and positional information rides on a separate RoPE key that is
//! shared by all heads, so the per-token inference cache is only `kv_lora_rank + qk_rope_head_dim`
//! numbers. Training uses the plain form: up-project K and V, then ordinary causal attention;
//! incremental decoding uses the "absorbed" form over a latent cache (`Mla::forward_cached`).

use tch::{nn, Kind, Tensor};

use crate::config::ModelConfig;
use crate::kv_cache::{LayerCache, Layout};
use crate::linear::{Linear, Precision};
use crate::norm::RmsNorm;
use crate::rope::Rope;

/// Query projection: full rank (`q_proj`), or low rank through a normalized latent
/// (`q_a_proj` → `q_a_layernorm` → `q_b_proj`).
#[derive(Debug)]
pub enum QueryProj {
    Full(Linear),
    LowRank {
        q_a_proj: Linear,
        q_a_layernorm: RmsNorm,
        q_b_proj: Linear,
    },
}

#[derive(Debug)]
pub struct Mla {
    pub q: QueryProj,
    /// dim → kv_lora_rank + qk_rope_head_dim: the latent c_kv and the shared RoPE key.
    pub kv_a_proj_with_mqa: Linear,
    pub kv_a_layernorm: RmsNorm,
    /// kv_lora_rank → n_heads·(qk_nope_head_dim + v_head_dim).
    pub kv_b_proj: Linear,
    pub o_proj: Linear,
    n_heads: i64,
    qk_nope: i64,
    qk_rope: i64,
    v_head: i64,
    kv_lora: i64,
    softmax_scale: f64,
}

/// The per-head queries, keys and values of one MLA forward pass, each `[batch, heads, seq, _]`.
pub struct Qkv {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
}

impl Mla {
    pub fn new(path: nn::Path, cfg: &ModelConfig, precision: &Precision) -> Self {
        let (d, h, std) = (cfg.dim, cfg.n_heads, cfg.init_std);
        let q_out = h * cfg.qk_head_dim();
        let q = if cfg.q_lora_rank == 0 {
            QueryProj::Full(Linear::new(&path / "q_proj", d, q_out, std, precision))
        } else {
            QueryProj::LowRank {
                q_a_proj: Linear::new(&path / "q_a_proj", d, cfg.q_lora_rank, std, precision),
                q_a_layernorm: RmsNorm::new(&path / "q_a_layernorm", cfg.q_lora_rank, cfg.norm_eps),
                q_b_proj: Linear::new(&path / "q_b_proj", cfg.q_lora_rank, q_out, std, precision),
            }
        };
        let kv_a_out = cfg.kv_lora_rank + cfg.qk_rope_head_dim;
        let kv_b_out = h * (cfg.qk_nope_head_dim + cfg.v_head_dim);
        Self {
            q,
            kv_a_proj_with_mqa: Linear::new(
                &path / "kv_a_proj_with_mqa",
                d,
                kv_a_out,
                std,
                precision,
            ),
            kv_a_layernorm: RmsNorm::new(&path / "kv_a_layernorm", cfg.kv_lora_rank, cfg.norm_eps),
            kv_b_proj: Linear::new(
                &path / "kv_b_proj",
                cfg.kv_lora_rank,
                kv_b_out,
                std,
                precision,
            ),
            o_proj: Linear::new(&path / "o_proj", h * cfg.v_head_dim, d, std, precision),
            n_heads: h,
            qk_nope: cfg.qk_nope_head_dim,
            qk_rope: cfg.qk_rope_head_dim,
            v_head: cfg.v_head_dim,
            kv_lora: cfg.kv_lora_rank,
            softmax_scale: cfg.softmax_scale(),
        }
    }

    /// Attention softmax scale, qk_head_dim^-0.5 (times YaRN mscale²).
    pub fn softmax_scale(&self) -> f64 {
        self.softmax_scale
    }

    /// Per-head queries of `x` at positions `start..start + seq`, split into the part compared
    /// with the up-projected keys `q_nope [b, s, h, qk_nope]` and the rotated part
    /// `q_pe [b, s, h, qk_rope]`.
    fn queries(&self, x: &Tensor, rope: &Rope, start: i64) -> (Tensor, Tensor) {
        let (b, s, _) = x
            .size3()
            .expect("attention input must be [batch, seq, dim]");
        let q = match &self.q {
            QueryProj::Full(q_proj) => q_proj.forward(x),
            QueryProj::LowRank {
                q_a_proj,
                q_a_layernorm,
                q_b_proj,
            } => q_b_proj.forward(&q_a_layernorm.forward(&q_a_proj.forward(x))),
        };
        let q = q.view([b, s, self.n_heads, self.qk_nope + self.qk_rope]);
        let q_parts = q.split_with_sizes([self.qk_nope, self.qk_rope], -1);
        (
            q_parts[0].shallow_clone(),
            rope.apply_from(&q_parts[1], start),
        )
    }

    /// What MLA caches per token: the normalized latent `c_kv [b, s, kv_lora_rank]` and the rotated
    /// RoPE key shared by all heads `k_rope [b, s, qk_rope]`, for positions `start..start + seq`.
    fn latents(&self, x: &Tensor, rope: &Rope, start: i64) -> (Tensor, Tensor) {
        let (b, s, _) = x
            .size3()
            .expect("attention input must be [batch, seq, dim]");
        let kv_a = self.kv_a_proj_with_mqa.forward(x);
        let kv_a_parts = kv_a.split_with_sizes([self.kv_lora, self.qk_rope], -1);
        let c_kv = self.kv_a_layernorm.forward(&kv_a_parts[0]);
        let k_rope = rope.apply_from(&kv_a_parts[1].view([b, s, 1, self.qk_rope]), start);
        (c_kv, k_rope.view([b, s, self.qk_rope]))
    }

    /// Per-head queries `[b, s, h, nope+rope]`, keys (the shared RoPE key broadcast to every head)
    /// and values `[b, s, h, v_head]` of `x` at positions `start..start + seq`.
    fn heads(&self, x: &Tensor, rope: &Rope, start: i64) -> (Tensor, Tensor, Tensor) {
        let (b, s, _) = x
            .size3()
            .expect("attention input must be [batch, seq, dim]");
        let h = self.n_heads;
        let (q_nope, q_pe) = self.queries(x, rope, start);
        let q = Tensor::cat(&[q_nope, q_pe], -1);
        let (c_kv, k_rope) = self.latents(x, rope, start);
        let kv = self
            .kv_b_proj
            .forward(&c_kv)
            .view([b, s, h, self.qk_nope + self.v_head]);
        let kv_parts = kv.split_with_sizes([self.qk_nope, self.v_head], -1);
        let k = Tensor::cat(
            &[
                kv_parts[0].shallow_clone(),
                k_rope
                    .view([b, s, 1, self.qk_rope])
                    .expand([b, s, h, self.qk_rope], false),
            ],
            -1,
        );
        (q, k, kv_parts[1].shallow_clone())
    }

    /// Queries `[b, h, s, nope+rope]`, keys (the shared RoPE key broadcast to every head) and
    /// values.
    pub fn qkv(&self, x: &Tensor, rope: &Rope) -> Qkv {
        let (q, k, v) = self.heads(x, rope, 0);
        Qkv {
            q: q.transpose(1, 2),
            k: k.transpose(1, 2),
            v: v.transpose(1, 2),
        }
    }

    /// Attention of the new tokens `x [b, s, dim]` (positions `cache.len()..`) over every cached
    /// position and themselves, appending the new positions to `cache` in its layout.
    pub fn forward_cached(&self, x: &Tensor, rope: &Rope, cache: &mut LayerCache) -> Tensor {
        let (b, s, _) = x
            .size3()
            .expect("attention input must be [batch, seq, dim]");
        let start = cache.len();
        let out = match cache.layout {
            Layout::Latent => self.absorbed(x, rope, cache),
            Layout::UpProjected => {
                // softmax(q·kᵀ·scale) v over the per-head keys and values of every position.
                let (q, k, v) = self.heads(x, rope, start);
                let (k, v) = cache.append(&k, &v);
                let scores =
                    Tensor::einsum("bshd,bthd->bsht", &[&q, &k], None::<i64>) * self.softmax_scale;
                let probs = causal_softmax(&scores, start).to_kind(x.kind());
                Tensor::einsum("bsht,bthd->bshd", &[&probs, &v], None::<i64>)
            }
        };
        self.o_proj
            .forward(&out.reshape([b, s, self.n_heads * self.v_head]))
    }

    /// DeepSeek-V3's "absorb" form over a latent cache: with W_UK, W_UV the key and value halves
    /// of `kv_b_proj` (per head `[qk_nope, kv_lora]`, `[v_head, kv_lora]`),
    ///   q_nope·k_nope = q_nope·(W_UK c_kv) = (W_UKᵀ q_nope)·c_kv    (W_UK folded into the query)
    ///   Σ_t p_t·v_t   = W_UV (Σ_t p_t·c_kv_t)                        (W_UV folded into the output)
    /// so only c_kv and k_rope are ever stored, never per-head keys or values. Returns the
    /// per-head outputs `[b, s, h, v_head]`.
    fn absorbed(&self, x: &Tensor, rope: &Rope, cache: &mut LayerCache) -> Tensor {
        let start = cache.len();
        let (q_nope, q_pe) = self.queries(x, rope, start);
        let (c_kv, k_rope) = self.latents(x, rope, start);
        let (c_kv, k_rope) = cache.append(&c_kv, &k_rope);
        let w_kv_b =
            self.kv_b_proj
                .weight
                .view([self.n_heads, self.qk_nope + self.v_head, self.kv_lora]);
        let w_uk = w_kv_b.narrow(1, 0, self.qk_nope);
        let w_uv = w_kv_b.narrow(1, self.qk_nope, self.v_head);
        let q_latent = Tensor::einsum("bshd,hdc->bshc", &[&q_nope, &w_uk], None::<i64>);
        let scores = (Tensor::einsum("bshc,btc->bsht", &[&q_latent, &c_kv], None::<i64>)
            + Tensor::einsum("bshr,btr->bsht", &[&q_pe, &k_rope], None::<i64>))
            * self.softmax_scale;
        let probs = causal_softmax(&scores, start).to_kind(x.kind());
        let out_latent = Tensor::einsum("bsht,btc->bshc", &[&probs, &c_kv], None::<i64>);
        Tensor::einsum("bshc,hdc->bshd", &[&out_latent, &w_uv], None::<i64>)
    }

    /// Causal self-attention over `x` of shape `[batch, seq, dim]`.
    pub fn forward(&self, x: &Tensor, rope: &Rope) -> Tensor {
        let (b, s, _) = x
            .size3()
            .expect("attention input must be [batch, seq, dim]");
        let Qkv { q, k, v } = self.qkv(x, rope);
        let out = causal_attention(&q, &k, &v, self.softmax_scale, PadValues::Auto);
        self.o_proj.forward(
            &out.transpose(1, 2)
                .reshape([b, s, self.n_heads * self.v_head]),
        )
    }
}

/// Whether `causal_attention` zero-pads the values to the query's head dim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadValues {
    /// When that lets libtorch run FlashAttention and the values as they are do not.
    Auto,
    Never,
    Always,
}

impl PadValues {
    /// Whether the values of these operands get padded.
    pub fn applies(self, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> bool {
        v.size()[3] < q.size()[3]
            && match self {
                PadValues::Never => false,
                PadValues::Always => true,
                // `q` stands in for the padded values: same shape, dtype and device.
                PadValues::Auto => {
                    sdp_backend(q, k, v, scale) != FLASH && sdp_backend(q, k, q, scale) == FLASH
                }
            }
    }
}

/// libtorch's `SDPBackend::flash_attention`, as `_fused_sdp_choice` returns it.
const FLASH: i64 = 1;

/// The fused-attention kernel libtorch would pick for these operands (its `SDPBackend`: 0 math,
/// 1 flash, 2 efficient, 3 cuDNN). Decided from shapes, dtypes and device; runs nothing.
pub fn sdp_backend(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> i64 {
    Tensor::internal_fused_sdp_choice::<Tensor>(q, k, v, None, 0.0, true, scale, false)
}

/// Causal softmax(q·kᵀ·scale)·v with libtorch's fused attention (`q`, `k` `[b, h, s, qk]`, `v`
/// `[b, h, s, v_head]`). MLA's values are narrower than its queries and keys (V3: 128 against
/// 192), and FlashAttention needs one head dim for all three, so libtorch falls back to another
/// kernel (on the CPU the unfused math one, which materializes every score). Padded with zeros
/// to the query's head dim, the values make FlashAttention eligible; the padded output columns
/// are zero and are cut off. `whale check attention` compares both ways: on a 2-core CPU the
/// padded one is 1.3× faster forward + backward at tiny's shape and 2.5× at small's 1024 tokens.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, pad: PadValues) -> Tensor {
    let (v_head, qk_head) = (v.size()[3], q.size()[3]);
    let padded = pad.applies(q, k, v, scale);
    let v = match padded {
        true => v.constant_pad_nd([0, qk_head - v_head]),
        false => v.shallow_clone(),
    };
    let out =
        Tensor::scaled_dot_product_attention::<Tensor>(q, k, &v, None, 0.0, true, scale, false);
    match padded {
        true => out.narrow(3, 0, v_head),
        false => out,
    }
}

/// Softmax over keys of `scores [b, s, h, t]` for new tokens at positions `start..start + s`:
/// token i sees the cached positions t <= start + i.
pub(crate) fn causal_softmax(scores: &Tensor, start: i64) -> Tensor {
    let (_, s, _, t) = scores.size4().expect("scores must be [b, s, h, t]");
    let device = scores.device();
    let key_pos = Tensor::arange(t, (Kind::Int64, device)).view([1, t]);
    let query_pos = Tensor::arange_start(start, start + s, (Kind::Int64, device)).view([s, 1]);
    let future = key_pos.gt_tensor(&query_pos).view([1, s, 1, t]);
    scores
        .masked_fill(&future, f64::NEG_INFINITY)
        .softmax(-1, Kind::Float)
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;
    use crate::testing::tiny_config;

    /// softmax(q kᵀ·scale + causal mask) v, written out by hand.
    fn naive_attention(mla: &Mla, x: &Tensor, rope: &Rope) -> Tensor {
        let (b, s, _) = x.size3().unwrap();
        let Qkv { q, k, v } = mla.qkv(x, rope);
        let scores = q.matmul(&k.transpose(-2, -1)) * mla.softmax_scale();
        let future = Tensor::ones([s, s], (Kind::Bool, Device::Cpu)).triu(1);
        let probs = scores
            .masked_fill(&future, f64::NEG_INFINITY)
            .softmax(-1, Kind::Float);
        let out = probs.matmul(&v).transpose(1, 2).reshape([b, s, -1]);
        mla.o_proj.forward(&out)
    }

    #[test]
    fn matches_naive_attention_with_and_without_q_lora() {
        for q_lora_rank in [0, 32] {
            let mut cfg = tiny_config();
            cfg.q_lora_rank = q_lora_rank;
            cfg.init_std = 0.1;
            tch::manual_seed(3);
            let vs = nn::VarStore::new(Device::Cpu);
            let mla = Mla::new(vs.root() / "attn", &cfg, &Precision::Fp32);
            let rope = Rope::new(&cfg, Device::Cpu);
            let x = Tensor::randn([2, 12, cfg.dim], (Kind::Float, Device::Cpu));
            let fast = mla.forward(&x, &rope);
            let slow = naive_attention(&mla, &x, &rope);
            assert_eq!(fast.size(), vec![2, 12, cfg.dim]);
            let err = (&fast - &slow).abs().max().double_value(&[]);
            assert!(err < 1e-5, "q_lora_rank {q_lora_rank}: max error {err}");
        }
    }

    #[test]
    fn is_causal() {
        let cfg = tiny_config();
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let mla = Mla::new(vs.root() / "attn", &cfg, &Precision::Fp32);
        let rope = Rope::new(&cfg, Device::Cpu);
        let x = Tensor::randn([1, 10, cfg.dim], (Kind::Float, Device::Cpu));
        let y = x.copy();
        y.narrow(1, 7, 3)
            .copy_(&Tensor::randn([1, 3, cfg.dim], (Kind::Float, Device::Cpu)));
        let (ox, oy) = (mla.forward(&x, &rope), mla.forward(&y, &rope));
        let err = (ox.narrow(1, 0, 7) - oy.narrow(1, 0, 7))
            .abs()
            .max()
            .double_value(&[]);
        assert!(err < 1e-6, "future tokens leaked into the past: {err}");
    }
}
