//! The FP8 linear `y = x·wᵀ` with all three GEMMs on E4M3 inputs and an explicit backward.
//!
//! | GEMM  | computes        | operands (contraction dim last)     | scales          |
//! |-------|-----------------|-------------------------------------|-----------------|
//! | Fprop | `y  = x·wᵀ`     | `x [m,k]`, `w [n,k]`                | 1×128, 128×128  |
//! | Dgrad | `dx = g·w`      | `g [m,n]`, `wᵀ [k,n]`               | 1×128, 128×128  |
//! | Wgrad | `dw = gᵀ·x`     | `gᵀ [n,m]`, `xᵀ [k,m]`              | 1×128, 1×128    |
//!
//! Every scale group runs along the contraction dimension, so a GEMM is a sum of per-group dot
//! products each multiplied by two scales — the structure the native kernels exploit. Wgrad
//! contracts over tokens, so `g` and `x` are re-quantized in 128-token groups there; with
//! [`Recipe::fp8_activations`] the saved `x` is its FP8 forward payload (1 byte/element instead of
//! 4), dequantized and re-quantized as DeepSeek does. Weights are re-used from the forward as
//! quantized blocks (a block's transpose is a block with the same scale).
//!
//! The forward runs without autograd; [`custom_grad`] attaches a node whose backward is
//! [`Fp8LinearGrad::backward`], so a single `loss.backward()` covers FP8 and ordinary layers alike.

use super::backend::Backend;
use super::quant::{quantize, Granularity, Quantized, ScaleMode};
use super::Recipe;
use crate::custom_grad::{self, CustomGrad};
use anyhow::{bail, Result};
use std::cell::Cell;
use tch::{Kind, Tensor};

thread_local! {
    /// Bytes of linear inputs held for the backward on this thread: (as stored, at input dtype).
    static SAVED_INPUT_BYTES: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Bytes of FP8-linear inputs held for the backward by forward passes on this thread since the
/// last call: `(as stored, at the input's dtype)`. The difference is the activation memory that
/// FP8 storage saves — an upper bound, since another op may keep the full-precision input alive.
pub fn take_saved_input_bytes() -> (u64, u64) {
    SAVED_INPUT_BYTES.with(|c| c.replace((0, 0)))
}

fn bytes(t: &Tensor) -> u64 {
    (t.numel() * t.kind().elt_size_in_bytes()) as u64
}

/// `y = x·wᵀ` for `x [.., k]` and `w [n, k]`, in FP8 per `recipe`; `y` has `x`'s kind.
pub fn fp8_linear(x: &Tensor, w: &Tensor, recipe: &Recipe) -> Result<Tensor> {
    let (n, k) = w.size2()?;
    let mut out_shape = x.size();
    if out_shape.last() != Some(&k) {
        bail!(
            "fp8 linear: input {:?} does not end in {k} (weight {n}x{k})",
            x.size()
        );
    }
    *out_shape.last_mut().expect("checked above") = n;
    let x2 = x.reshape([-1, k]);
    let needs_grad = custom_grad::grad_enabled() && (x.requires_grad() || w.requires_grad());
    let (y, saved) = tch::no_grad(|| -> Result<(Tensor, Vec<Tensor>)> {
        let qx = quantize(&x2, Granularity::Tile, recipe.scale_mode)?;
        let qw = quantize(w, Granularity::Block, recipe.scale_mode)?;
        let y = recipe
            .backend
            .gemm(&qx, &qw)?
            .to_kind(x.kind())
            .reshape(&out_shape);
        if !needs_grad {
            return Ok((y, Vec::new()));
        }
        let mut saved = if recipe.fp8_activations {
            let compact = qx.compact();
            vec![compact.data, compact.scales]
        } else {
            vec![x2.detach()]
        };
        let stored = saved.iter().map(bytes).sum::<u64>();
        SAVED_INPUT_BYTES.with(|c| {
            let (s, f) = c.get();
            c.set((s + stored, f + bytes(&x2)));
        });
        saved.extend([qw.data, qw.scales]);
        Ok((y, saved))
    })?;
    if !needs_grad {
        return Ok(y);
    }
    let flags = Flags::from_recipe(recipe, k).encode();
    custom_grad::apply::<Fp8LinearGrad>(&[x, w], &y, &saved, flags)
}

/// What the backward needs besides tensors, packed into the node's `i64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Flags {
    native: bool,
    power_of_two: bool,
    fp8_activations: bool,
    /// Input features (the padded payloads no longer show it).
    k: i64,
}

impl Flags {
    fn from_recipe(r: &Recipe, k: i64) -> Self {
        Flags {
            native: r.backend == Backend::Native,
            power_of_two: r.scale_mode == ScaleMode::PowerOfTwo,
            fp8_activations: r.fp8_activations,
            k,
        }
    }

    fn encode(self) -> i64 {
        (self.k << 8)
            | i64::from(self.native)
            | (i64::from(self.power_of_two) << 1)
            | (i64::from(self.fp8_activations) << 2)
    }

    fn decode(v: i64) -> Self {
        Flags {
            native: v & 1 != 0,
            power_of_two: v & 2 != 0,
            fp8_activations: v & 4 != 0,
            k: v >> 8,
        }
    }
}

/// Dgrad and Wgrad of [`fp8_linear`], both from FP8 operands.
pub struct Fp8LinearGrad;

impl CustomGrad for Fp8LinearGrad {
    fn backward(flags: i64, saved: &[Tensor], g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let f = Flags::decode(flags);
        let (backend, mode) = (
            if f.native {
                Backend::Native
            } else {
                Backend::Emulated
            },
            if f.power_of_two {
                ScaleMode::PowerOfTwo
            } else {
                ScaleMode::Exact
            },
        );
        let g_shape = g.size();
        let n = *g_shape
            .last()
            .expect("output gradient has a feature dimension");
        let g2 = g.reshape([-1, n]).to_kind(Kind::Float);
        let m = g2.size()[0];
        let (x, w_saved) = if f.fp8_activations {
            let qx = Quantized {
                data: saved[0].shallow_clone(),
                scales: saved[1].shallow_clone(),
                granularity: Granularity::Tile,
                rows: m,
                cols: f.k,
            };
            (qx.dequantize(), &saved[2..])
        } else {
            (saved[0].to_kind(Kind::Float), &saved[1..])
        };
        // wᵀ [k, n] in 128×128 blocks: the forward's blocks, transposed with their scales.
        let wt = Quantized {
            data: w_saved[0].tr().contiguous(),
            scales: w_saved[1].tr().contiguous(),
            granularity: Granularity::Block,
            rows: f.k,
            cols: n,
        };
        let dx = backend.gemm(&quantize(&g2, Granularity::Tile, mode)?, &wt)?;
        let gt = quantize(&g2.tr(), Granularity::Tile, mode)?;
        let xt = quantize(&x.tr(), Granularity::Tile, mode)?;
        let dw = backend.gemm(&gt, &xt)?;
        let mut dx_shape = g_shape;
        *dx_shape.last_mut().expect("non-empty") = f.k;
        Ok(vec![
            Some(dx.to_kind(g.kind()).reshape(&dx_shape)),
            Some(dw),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Half an E4M3 ulp relative to the value: 3 mantissa bits, round to nearest.
    const U: f64 = 1.0 / 16.0;

    fn randn(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    /// `|got - want| ≤ rel·bound + 1e-5` elementwise, where `bound` is the sum of the magnitudes
    /// of the products (so the tolerance holds however the rounding errors line up).
    fn assert_within(got: &Tensor, want: &Tensor, bound: &Tensor, rel: f64, what: &str) {
        let excess = (got - want).abs() - (bound * rel + 1e-5);
        let worst = f64::try_from(excess.max()).unwrap();
        assert!(worst <= 0.0, "{what}: exceeds the E4M3 bound by {worst:e}");
        // Errors are unbiased, so in aggregate they stay well under one half-ulp.
        let rel_norm = f64::try_from((got - want).norm() / want.norm()).unwrap();
        assert!(rel_norm < U, "{what}: relative error {rel_norm}");
    }

    fn recipes() -> Vec<Recipe> {
        let mut out = Vec::new();
        for scale_mode in [ScaleMode::Exact, ScaleMode::PowerOfTwo] {
            for fp8_activations in [true, false] {
                out.push(Recipe {
                    backend: Backend::Emulated,
                    scale_mode,
                    fp8_activations,
                });
            }
        }
        out
    }

    /// Fprop, Dgrad and Wgrad against the FP32 linear, with ragged (non-multiple-of-128) dims.
    /// Each operand carries relative error ≤ u = 2^-4, so a product is off by ≤ (1+u)²-1, and by
    /// (1+u)³-1 in Wgrad, whose `x` may be quantized twice (FP8 storage, then 128×1 groups).
    #[test]
    fn gradients_match_fp32_within_e4m3_bounds() {
        for recipe in recipes() {
            let x = randn(&[3, 70, 200]).set_requires_grad(true);
            let w = (randn(&[130, 200]) * 0.05).set_requires_grad(true);
            let g = randn(&[3, 70, 130]);
            let y = fp8_linear(&x, &w, &recipe).unwrap();
            (&y * &g).sum(Kind::Float).backward();

            let (x2, g2) = (x.detach().reshape([-1, 200]), g.reshape([-1, 130]));
            let wd = w.detach();
            let y_ref = x2.matmul(&wd.tr());
            let y_bound = x2.abs().matmul(&wd.abs().tr());
            assert_within(
                &y.detach().reshape([-1, 130]),
                &y_ref,
                &y_bound,
                2.0 * U + U * U,
                "fprop",
            );
            let dx_bound = g2.abs().matmul(&wd.abs());
            assert_within(
                &x.grad().reshape([-1, 200]),
                &g2.matmul(&wd),
                &dx_bound,
                2.0 * U + U * U,
                "dgrad",
            );
            let dw_bound = g2.abs().tr().matmul(&x2.abs());
            let cubic = (1.0 + U).powi(3) - 1.0;
            assert_within(&w.grad(), &g2.tr().matmul(&x2), &dw_bound, cubic, "wgrad");
        }
    }

    /// The backward quantizes the incoming gradient (what detach tricks cannot do): Dgrad is
    /// exactly `deq(Q(g))·deq(Q(w))`, not the straight-through `g·deq(Q(w))`.
    #[test]
    fn backward_quantizes_the_output_gradient() {
        let recipe = Recipe::default();
        let x = randn(&[64, 256]).set_requires_grad(true);
        let w = randn(&[128, 256]).set_requires_grad(true);
        let g = randn(&[64, 128]);
        (fp8_linear(&x, &w, &recipe).unwrap() * &g)
            .sum(Kind::Float)
            .backward();
        let qw = quantize(&w.detach(), Granularity::Block, ScaleMode::Exact)
            .unwrap()
            .dequantize();
        let qg = quantize(&g, Granularity::Tile, ScaleMode::Exact)
            .unwrap()
            .dequantize();
        assert!(x.grad().allclose(&qg.matmul(&qw), 1e-5, 1e-5, false));
        assert!(!x.grad().allclose(&g.matmul(&qw), 1e-5, 1e-5, false));
    }

    #[test]
    fn bf16_inputs_give_bf16_outputs_and_grads() {
        let x = randn(&[4, 8, 96])
            .to_kind(Kind::BFloat16)
            .set_requires_grad(true);
        let w = randn(&[40, 96]).set_requires_grad(true);
        let y = fp8_linear(&x, &w, &Recipe::default()).unwrap();
        assert_eq!((y.kind(), y.size()), (Kind::BFloat16, vec![4, 8, 40]));
        y.sum(Kind::Float).backward();
        assert_eq!(
            (x.grad().kind(), w.grad().kind()),
            (Kind::BFloat16, Kind::Float)
        );
    }

    #[test]
    fn no_node_without_grad_and_shape_errors() {
        let y = fp8_linear(&randn(&[2, 16]), &randn(&[8, 16]), &Recipe::default()).unwrap();
        assert!(!y.requires_grad());
        assert!(fp8_linear(&randn(&[2, 15]), &randn(&[8, 16]), &Recipe::default()).is_err());
    }

    /// FP8 storage keeps 1 byte + 4 bytes of scale per 128 elements instead of 4 bytes each.
    #[test]
    fn fp8_activation_storage_is_counted() {
        let _ = take_saved_input_bytes();
        let x = randn(&[60, 200]).set_requires_grad(true);
        let w = randn(&[32, 200]).set_requires_grad(true);
        for fp8_activations in [true, false] {
            let recipe = Recipe {
                fp8_activations,
                ..Recipe::default()
            };
            let _ = fp8_linear(&x, &w, &recipe).unwrap();
        }
        let full = 60 * 200 * 4;
        let fp8 = 60 * 200 + 60 * 2 * 4;
        assert_eq!(take_saved_input_bytes(), (fp8 + full, 2 * full));
        assert_eq!(take_saved_input_bytes(), (0, 0));
    }

    /// An expert that receives no tokens: empty Fprop/Dgrad, zero Wgrad.
    #[test]
    fn empty_inputs_give_empty_outputs_and_zero_weight_grads() {
        let x = randn(&[0, 64]).set_requires_grad(true);
        let w = randn(&[32, 64]).set_requires_grad(true);
        let y = fp8_linear(&x, &w, &Recipe::default()).unwrap();
        assert_eq!(y.size(), [0, 32]);
        y.sum(Kind::Float).backward();
        assert_eq!(x.grad().size(), [0, 64]);
        assert!(bool::try_from(w.grad().eq(0.0).all()).unwrap());
    }

    #[test]
    fn flags_round_trip() {
        let f = Flags {
            native: true,
            power_of_two: false,
            fp8_activations: true,
            k: 7168,
        };
        assert_eq!(Flags::decode(f.encode()), f);
    }

    /// Uniform values with unit variance from a private splitmix64 stream: tests run in parallel
    /// and share libtorch's global generator, so seeding it would not make a run reproducible.
    fn seeded(shape: &[i64], seed: u64) -> Tensor {
        let mut state = seed;
        let n: i64 = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                ((z >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 12f32.sqrt()
            })
            .collect();
        Tensor::from_slice(&values).view(shape)
    }

    /// A two-layer MLP classifier (cross-entropy, like a language model's loss) trained with FP8
    /// linears tracks the FP32 one: same init, data and steps; mean loss over the last 20% of
    /// steps within 0.5%.
    #[test]
    fn fp8_training_tracks_fp32_loss() {
        let run = |fp8: bool| -> f64 {
            let (d, h, classes, steps) = (64i64, 256i64, 32i64, 150u64);
            let teacher = seeded(&[d, classes], 1);
            let w1 = (seeded(&[h, d], 2) / (d as f64).sqrt()).set_requires_grad(true);
            let w2 = (seeded(&[classes, h], 3) / (h as f64).sqrt()).set_requires_grad(true);
            let recipe = Recipe::default();
            let lin = |x: &Tensor, w: &Tensor| {
                if fp8 {
                    fp8_linear(x, w, &recipe).unwrap()
                } else {
                    x.matmul(&w.tr())
                }
            };
            let mut losses = Vec::new();
            for step in 0..steps {
                let x = seeded(&[64, d], 100 + step);
                let labels = x.matmul(&teacher).argmax(-1, false);
                let logits = lin(&lin(&x, &w1).gelu("none"), &w2);
                let loss = logits.cross_entropy_for_logits(&labels);
                loss.backward();
                tch::no_grad(|| {
                    for w in [&w1, &w2] {
                        let mut w = w.shallow_clone();
                        let _ = w.f_sub_(&(w.grad() * 0.1)).unwrap();
                        let _ = w.grad().zero_();
                    }
                });
                losses.push(f64::try_from(loss).unwrap());
            }
            let tail = &losses[losses.len() * 4 / 5..];
            tail.iter().sum::<f64>() / tail.len() as f64
        };
        let (fp8, fp32) = (run(true), run(false));
        let rel = (fp8 - fp32).abs() / fp32;
        assert!(rel < 0.005, "fp8 {fp8} vs fp32 {fp32}: {rel}");
    }
}
