//! Rotary position embedding for the decoupled RoPE parts of MLA's queries and keys (or the whole
//! heads of grouped-query attention), with YaRN frequency interpolation when the model is trained
//! beyond its original context (DeepSeek-V3 `precompute_freqs_cis`).

use std::f64::consts::PI;

use tch::{Device, Tensor};

use crate::config::{AttentionKind, ModelConfig};

/// Which elements of a head form the rotated pairs. The two layouts are the same rotation up to a
/// fixed permutation of the projection's output rows, so each follows its public checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// `(x[2i], x[2i+1])`, DeepSeek-V2/V3's `view_as_complex` (transformers: `rope_interleave`).
    Interleaved,
    /// `(x[i], x[i + d/2])`, Llama's `rotate_half`, in which DeepSeek LLM was released.
    Halves,
}

/// Precomputed cos/sin tables of shape `[max_seq_len, rope_dim / 2]`.
#[derive(Debug)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    pairing: Pairing,
}

/// Rotation frequency of each pair, YaRN-corrected when `max_seq_len > original_seq_len`.
pub fn frequencies(cfg: &ModelConfig) -> Vec<f64> {
    let dim = cfg.rope_dim() as f64;
    let half = (cfg.rope_dim() / 2) as usize;
    let base = cfg.rope_theta;
    let mut freqs: Vec<f64> = (0..half)
        .map(|i| 1.0 / base.powf(2.0 * i as f64 / dim))
        .collect();
    if cfg.uses_yarn() {
        // Dimensions that rotate fewer than beta_slow times over the original context are
        // interpolated by 1/factor; those rotating more than beta_fast times are kept; a linear ramp
        // blends the band in between.
        let orig = cfg.original_seq_len as f64;
        let correction_dim =
            |rotations: f64| dim * (orig / (rotations * 2.0 * PI)).ln() / (2.0 * base.ln());
        let low = correction_dim(cfg.beta_fast).floor().max(0.0);
        let high = correction_dim(cfg.beta_slow).ceil().min(dim - 1.0);
        let high = if low == high { high + 0.001 } else { high };
        for (i, f) in freqs.iter_mut().enumerate() {
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            let smooth = 1.0 - ramp;
            *f = *f / cfg.rope_factor * (1.0 - smooth) + *f * smooth;
        }
    }
    freqs
}

impl Rope {
    pub fn new(cfg: &ModelConfig, device: Device) -> Self {
        let freqs = frequencies(cfg);
        let half = freqs.len() as i64;
        let angles: Vec<f32> = (0..cfg.max_seq_len)
            .flat_map(|t| freqs.iter().map(move |f| (t as f64 * f) as f32))
            .collect();
        let angles = Tensor::from_slice(&angles)
            .view([cfg.max_seq_len, half])
            .to_device(device);
        let pairing = match cfg.attention {
            AttentionKind::Mla => Pairing::Interleaved,
            AttentionKind::Gqa => Pairing::Halves,
        };
        Self {
            cos: angles.cos(),
            sin: angles.sin(),
            pairing,
        }
    }

    /// Rotates `x` of shape `[batch, seq, heads, rope_dim]` for positions `0..seq`.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        self.apply_from(x, 0)
    }

    /// Rotates `x` of shape `[batch, seq, heads, rope_dim]` for positions `start..start + seq`:
    /// the new tokens of an incremental decoding step, after `start` cached ones.
    pub fn apply_from(&self, x: &Tensor, start: i64) -> Tensor {
        let (b, s, h, d) = x
            .size4()
            .expect("rope input must be [batch, seq, heads, dim]");
        let (re, im) = match self.pairing {
            Pairing::Interleaved => {
                let pairs = x.view([b, s, h, d / 2, 2]);
                (pairs.select(-1, 0), pairs.select(-1, 1))
            }
            Pairing::Halves => (x.narrow(-1, 0, d / 2), x.narrow(-1, d / 2, d / 2)),
        };
        let cos = self
            .cos
            .narrow(0, start, s)
            .view([1, s, 1, d / 2])
            .to_kind(x.kind());
        let sin = self
            .sin
            .narrow(0, start, s)
            .view([1, s, 1, d / 2])
            .to_kind(x.kind());
        let out_re = &re * &cos - &im * &sin;
        let out_im = &re * &sin + &im * &cos;
        match self.pairing {
            Pairing::Interleaved => Tensor::stack(&[out_re, out_im], -1).view([b, s, h, d]),
            Pairing::Halves => Tensor::cat(&[out_re, out_im], -1),
        }
    }
}

#[cfg(test)]
mod tests {
    use tch::Kind;

    use super::*;

    fn cfg(max_seq_len: i64) -> ModelConfig {
        let mut c = crate::testing::repo_config("deepseek-v3");
        c.max_seq_len = max_seq_len;
        c
    }

    #[test]
    fn yarn_keeps_fast_dims_and_stretches_slow_ones() {
        let plain = frequencies(&cfg(4096));
        let yarn = frequencies(&cfg(16384));
        assert_eq!(plain.len(), 32);
        assert_eq!(plain[0], 1.0);
        assert_eq!(
            yarn[0], plain[0],
            "high-frequency pairs are not interpolated"
        );
        let last = plain.len() - 1;
        assert!(
            (yarn[last] - plain[last] / 40.0).abs() < 1e-15,
            "low frequencies divided by the factor"
        );
    }

    #[test]
    fn rotation_preserves_norm_and_relative_position() {
        let c = cfg(64);
        let rope = Rope::new(&c, Device::Cpu);
        tch::manual_seed(1);
        let q = Tensor::randn([1, 1, 1, 64], (Kind::Float, Device::Cpu)).repeat([1, 64, 1, 1]);
        let k = Tensor::randn([1, 1, 1, 64], (Kind::Float, Device::Cpu)).repeat([1, 64, 1, 1]);
        let (rq, rk) = (rope.apply(&q), rope.apply(&k));
        let norm_diff = (rq.norm() - q.norm()).abs().double_value(&[]);
        assert!(norm_diff < 1e-3);
        let dot = |i: i64, j: i64| {
            (rq.get(0).get(i) * rk.get(0).get(j))
                .sum(Kind::Float)
                .double_value(&[])
        };
        assert!(
            (dot(5, 2) - dot(13, 10)).abs() < 1e-4,
            "q·k depends only on the distance"
        );
    }
}
