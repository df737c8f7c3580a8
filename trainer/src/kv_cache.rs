//! The inference cache of MLA: per layer and token only the normalized latent c_kv
//! (`kv_lora_rank` numbers) and the rotated RoPE key shared by all heads (`qk_rope_head_dim`),
//! instead of the up-projected keys and values (`n_heads·(qk_head_dim + v_head_dim)`). Buffers
//! are allocated once for the whole generation, so the bytes reported are the bytes held.

use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;

/// The cached positions of one attention layer.
#[derive(Debug)]
pub struct LatentCache {
    /// Normalized latents `[batch, capacity, kv_lora_rank]`.
    c_kv: Tensor,
    /// Rotated shared RoPE keys `[batch, capacity, qk_rope_head_dim]`.
    k_rope: Tensor,
    /// Positions filled so far.
    len: i64,
}

impl LatentCache {
    pub fn new(cfg: &ModelConfig, batch: i64, capacity: i64, device: Device) -> Self {
        let options = (Kind::Float, device);
        Self {
            c_kv: Tensor::zeros([batch, capacity, cfg.kv_lora_rank], options),
            k_rope: Tensor::zeros([batch, capacity, cfg.qk_rope_head_dim], options),
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

    /// Stores `c_kv [b, s, kv_lora_rank]` and `k_rope [b, s, qk_rope]` of `s` new positions and
    /// returns views of every filled position, `[b, len, _]` each.
    pub fn append(&mut self, c_kv: &Tensor, k_rope: &Tensor) -> (Tensor, Tensor) {
        let s = c_kv.size()[1];
        let capacity = self.capacity();
        assert!(
            self.len + s <= capacity,
            "latent cache full: {} + {s} positions exceed its capacity {capacity}",
            self.len
        );
        tch::no_grad(|| {
            self.c_kv.narrow(1, self.len, s).copy_(c_kv);
            self.k_rope.narrow(1, self.len, s).copy_(k_rope);
        });
        self.len += s;
        (
            self.c_kv.narrow(1, 0, self.len),
            self.k_rope.narrow(1, 0, self.len),
        )
    }

    /// Positions the buffers can hold.
    pub fn capacity(&self) -> i64 {
        self.c_kv.size()[1]
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
        let bytes = |t: &Tensor| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64;
        bytes(&self.c_kv) + bytes(&self.k_rope)
    }
}

/// One `LatentCache` per attention layer: the main model's layers, then the MTP blocks'.
#[derive(Debug)]
pub struct ModelCache {
    pub layers: Vec<LatentCache>,
    pub mtp: Vec<LatentCache>,
    /// Batch × capacity, for the comparison with an up-projected cache.
    slots: i64,
    /// Numbers per token and layer of an up-projected K/V cache: n_heads·(qk_head_dim + v_head_dim).
    full_kv_per_token: i64,
}

impl ModelCache {
    /// Caches for `batch` sequences of up to `capacity` tokens (at most `max_seq_len`), with one
    /// for the first MTP module when `drafting` (speculative decoding).
    pub fn new(
        cfg: &ModelConfig,
        batch: i64,
        capacity: i64,
        device: Device,
        drafting: bool,
    ) -> Self {
        let caches = |n: i64| {
            (0..n)
                .map(|_| LatentCache::new(cfg, batch, capacity, device))
                .collect()
        };
        Self {
            layers: caches(cfg.n_layers),
            mtp: caches(i64::from(drafting && cfg.mtp_depth > 0)),
            slots: batch * capacity,
            full_kv_per_token: cfg.n_heads * (cfg.qk_head_dim() + cfg.v_head_dim),
        }
    }

    /// Positions the main model has cached.
    pub fn len(&self) -> i64 {
        self.layers.first().map_or(0, LatentCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions each layer can hold.
    pub fn capacity(&self) -> i64 {
        self.layers.first().map_or(0, LatentCache::capacity)
    }

    /// Forgets the main model's positions from `len` on (drafts it rejected).
    pub fn rewind(&mut self, len: i64) {
        self.layers.iter_mut().for_each(|c| c.truncate(len));
    }

    /// Bytes held by every layer's latent cache (main and MTP).
    pub fn bytes(&self) -> i64 {
        self.layers
            .iter()
            .chain(&self.mtp)
            .map(LatentCache::bytes)
            .sum()
    }

    /// Bytes the same positions would take as up-projected FP32 keys and values per head.
    pub fn full_kv_bytes(&self) -> i64 {
        let layers = (self.layers.len() + self.mtp.len()) as i64;
        layers * self.slots * self.full_kv_per_token * Kind::Float.elt_size_in_bytes() as i64
    }
}
