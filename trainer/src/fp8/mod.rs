//! FP8 mixed precision, DeepSeek-V3's recipe (§3.3; see REFERENCE.md).
//!
//! The linear layers of MLA, the dense FFNs and the experts run their three GEMMs (forward,
//! input-gradient, weight-gradient) on E4M3 inputs with fine-grained scales — activations and
//! gradients per 1×128 tile, weights per 128×128 block, `scale = max(amax, 1e-4)/448` computed
//! online — and accumulate in FP32. Everything else (embedding, output head, gate, norms,
//! attention) stays in higher precision and master weights stay FP32; that is the trainer's job.
//!
//! - [`quant`]: the quantizer (E4M3 rounding, tile/block scales, padding, NaN refusal).
//! - [`linear`]: [`fp8_linear`], the FP8 linear with an explicit backward, and the count of the
//!   activation bytes it keeps for the backward ([`take_saved_input_bytes`]).
//! - [`backend`]: `emulated` (any device) or `native` (`_scaled_mm`, Hopper), chosen by `auto`.
//!
//! The explicit backward rests on [`crate::custom_grad`], the autograd node with a Rust backward
//! (tch cannot define autograd functions; see its module doc for why detach tricks are not enough).

pub mod backend;
pub mod linear;
pub mod quant;

pub use backend::{select, Backend, BackendChoice, Selection};
pub use linear::{fp8_linear, take_saved_input_bytes};
pub use quant::ScaleMode;

/// How the FP8 linears run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recipe {
    pub backend: Backend,
    pub scale_mode: ScaleMode,
    /// Save each linear's input for the backward as its FP8 payload (4× less activation memory
    /// than FP32) rather than in full precision.
    pub fp8_activations: bool,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            backend: Backend::Emulated,
            scale_mode: ScaleMode::Exact,
            fp8_activations: true,
        }
    }
}
