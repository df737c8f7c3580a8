//! RMSNorm, the only normalization in DeepSeek-V3 (pre-norm before attention and FFN, on the
//! compressed latents, and in the MTP modules).

use tch::{nn, Tensor};

/// `x / rms(x) * weight`, computed by libtorch's fused `rms_norm`.
#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(path: nn::Path, dim: i64, eps: f64) -> Self {
        Self {
            weight: path.ones("weight", &[dim]),
            eps,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let dim = *x.size().last().expect("rms_norm of a scalar");
        // Under autocast `x` can be BF16: the weight follows it so that the fused kernel runs
        // (it accumulates in FP32 either way) instead of the slow mixed-dtype fallback.
        x.rms_norm([dim], Some(&self.weight.to_kind(x.kind())), self.eps)
    }
}
