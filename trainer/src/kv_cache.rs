//! The inference caches of MLA, in DeepSeek-V3 `inference/model.py`'s two layouts:
//! - `Latent` ("absorb"): per layer and token only the normalized latent c_kv (`kv_lora_rank`
//!   numbers) and the rotated RoPE key shared by all heads (`qk_rope_head_dim`);
//! - `UpProjected` ("naive"): the per-head keys and values, `n_heads·(qk_head_dim + v_head_dim)`.
//!
//! Grouped-query attention has one layout whatever is asked: its `n_kv_heads` keys and values.
//!
//! Buffers are allocated once for the whole generation, so the bytes reported are the bytes held.

use tch::{Device, Kind, Tensor};

use crate::config::{AttentionKind, ModelConfig};

/// What a layer keeps of each past position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// c_kv and k_rope; attention runs in the absorbed form (`Mla::forward_cached`).
    Latent,
    /// Per-head keys and values, as plain multi-head attention caches them.
    UpProjected,
}

impl std::str::FromStr for Layout {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "latent" => Ok(Layout::Latent),
            "up-projected" => Ok(Layout::UpProjected),
            other => {
                anyhow::bail!("unknown cache layout {other:?} (expected latent or up-projected)")
            }
        }
    }
}

/// The cached positions of one attention layer: two buffers `[batch, capacity, …]` filled along
/// dimension 1, (c_kv `[…, kv_lora_rank]`, k_rope `[…, qk_rope]`) for `Latent`, (k `[…, heads,
/// qk_head_dim]`, v `[…, heads, v_head_dim]`) for `UpProjected`; (k, v `[…, n_kv_heads, head_dim]`)
/// for grouped-query attention.
#[derive(Debug)]
pub struct LayerCache {
    pub layout: Layout,
    buffers: [Tensor; 2],
    /// Positions filled so far.
    len: i64,
}

impl LayerCache {
    pub fn new(
        cfg: &ModelConfig,
        layout: Layout,
        batch: i64,
        capacity: i64,
        device: Device,
    ) -> Self {
        let zeros = |shape: &[i64]| {
            let full: Vec<i64> = [batch, capacity].iter().chain(shape).copied().collect();
            Tensor::zeros(full, (Kind::Float, device))
        };
        let buffers = match (cfg.attention, layout) {
            (AttentionKind::Gqa, _) => [
                zeros(&[cfg.kv_heads(), cfg.qk_head_dim()]),
                zeros(&[cfg.kv_heads(), cfg.value_head_dim()]),
            ],
            (AttentionKind::Mla, Layout::Latent) => {
                [zeros(&[cfg.kv_lora_rank]), zeros(&[cfg.qk_rope_head_dim])]
            }
            (AttentionKind::Mla, Layout::UpProjected) => [
                zeros(&[cfg.n_heads, cfg.qk_head_dim()]),
                zeros(&[cfg.n_heads, cfg.v_head_dim]),
            ],
        };
        Self {
            layout,
            buffers,
            len: 0,
        }
    }

    /// Positions filled so far: the position of the next token.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the buffers can hold.
    pub fn capacity(&self) -> i64 {
        self.buffers[0].size()[1]
    }

    /// Stores `s` new positions of both buffers (`[b, s, …]` each) and returns views of every
    /// filled position, `[b, len, …]` each.
    pub fn append(&mut self, first: &Tensor, second: &Tensor) -> (Tensor, Tensor) {
        let s = first.size()[1];
        assert!(
            self.len + s <= self.capacity(),
            "attention cache full: {} + {s} positions exceed its capacity {}",
            self.len,
            self.capacity()
        );
        tch::no_grad(|| {
            for (buffer, new) in self.buffers.iter().zip([first, second]) {
                buffer.narrow(1, self.len, s).copy_(new);
            }
        });
        self.len += s;
        let [a, b] = &self.buffers;
        (a.narrow(1, 0, self.len), b.narrow(1, 0, self.len))
    }

    /// Forgets the positions from `len` on (drafted tokens the main model rejected).
    pub fn truncate(&mut self, len: i64) {
        assert!(
            len <= self.len,
            "cannot truncate {} positions to {len}",
            self.len
        );
        self.len = len;
    }

    /// Bytes of the buffers.
    pub fn bytes(&self) -> i64 {
        self.buffers
            .iter()
            .map(|t| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64)
            .sum()
    }
}

/// One `LayerCache` per attention layer: the main model's layers, then the MTP blocks'.
#[derive(Debug)]
pub struct ModelCache {
    pub layers: Vec<LayerCache>,
    pub mtp: Vec<LayerCache>,
    /// Batch × capacity, for the comparison with an up-projected cache.
    slots: i64,
    /// Numbers per token and layer of an up-projected (multi-head) K/V cache:
    /// n_heads·(qk_head_dim + v_head_dim).
    full_kv_per_token: i64,
}

impl ModelCache {
    /// Caches for `batch` sequences of up to `capacity` tokens (at most `max_seq_len`), with one
    /// for the first MTP module when `drafting` (speculative decoding).
    pub fn new(
        cfg: &ModelConfig,
        layout: Layout,
        batch: i64,
        capacity: i64,
        device: Device,
        drafting: bool,
    ) -> Self {
        let caches = |n: i64| {
            (0..n)
                .map(|_| LayerCache::new(cfg, layout, batch, capacity, device))
                .collect()
        };
        Self {
            layers: caches(cfg.n_layers),
            mtp: caches(i64::from(drafting && cfg.mtp_depth > 0)),
            slots: batch * capacity,
            full_kv_per_token: cfg.n_heads * (cfg.qk_head_dim() + cfg.value_head_dim()),
        }
    }

    /// Positions the main model has cached.
    pub fn len(&self) -> i64 {
        self.layers.first().map_or(0, LayerCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions each layer can hold.
    pub fn capacity(&self) -> i64 {
        self.layers.first().map_or(0, LayerCache::capacity)
    }

    /// Forgets the main model's positions from `len` on (drafts it rejected).
    pub fn rewind(&mut self, len: i64) {
        self.layers.iter_mut().for_each(|c| c.truncate(len));
    }

    /// Bytes held by every layer's cache (main and MTP).
    pub fn bytes(&self) -> i64 {
        self.layers
            .iter()
            .chain(&self.mtp)
            .map(LayerCache::bytes)
            .sum()
    }

    /// Bytes the same positions take as up-projected FP32 keys and values per head.
    pub fn full_kv_bytes(&self) -> i64 {
        let layers = (self.layers.len() + self.mtp.len()) as i64;
        layers * self.slots * self.full_kv_per_token * Kind::Float.elt_size_in_bytes() as i64
    }
}
