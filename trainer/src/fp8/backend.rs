//! Where the FP8 GEMMs run: `emulated` (dequantize, FP32 GEMM; any device) or `native`
//! (`_scaled_mm` on E4M3 payloads with DeepSeek block scales; Hopper only).
//!
//! Both take the same [`Quantized`] operands, so they differ only in how the products are summed:
//! the emulation is exact-product FP32 accumulation of the dequantized values, the native kernel
//! accumulates in the tensor cores' FP32 with scales applied per 128-wide group. libtorch supports
//! DeepSeek's 1×128 / 128×128 scales only on sm90 (cuBLASLt ≥ 12.9); sm89 offers only per-tensor
//! and row-wise scaling, which is not the recipe, so `auto` picks `native` only where a probe GEMM
//! with block scales runs and agrees with the emulation, and says why otherwise.

use super::quant::{quantize, Granularity, Quantized, ScaleMode};
use anyhow::{bail, Context, Result};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

/// The GEMM implementation behind the FP8 linear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Emulated,
    Native,
}

/// What the user asked for (`--fp8-backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    #[default]
    Auto,
    Emulated,
    Native,
}

impl FromStr for BackendChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "emulated" => Ok(Self::Emulated),
            "native" => Ok(Self::Native),
            _ => bail!("unknown FP8 backend {s:?} (expected auto, emulated or native)"),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Emulated => "emulated",
            Backend::Native => "native",
        })
    }
}

/// The backend that will run and the sentence `whale train` prints about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub backend: Backend,
    pub reason: String,
}

/// Resolves a choice on a device. `native` is an error where it cannot run; `auto` never is.
pub fn select(choice: BackendChoice, device: Device) -> Result<Selection> {
    match choice {
        BackendChoice::Emulated => Ok(Selection {
            backend: Backend::Emulated,
            reason: "fp8 backend: emulated (requested)".into(),
        }),
        BackendChoice::Native => {
            probe_native(device).context("fp8 backend native requested but unavailable")?;
            Ok(Selection {
                backend: Backend::Native,
                reason: format!("fp8 backend: native _scaled_mm on {device:?} (requested)"),
            })
        }
        BackendChoice::Auto => Ok(match probe_native(device) {
            Ok(()) => Selection {
                backend: Backend::Native,
                reason: format!(
                    "fp8 backend: native _scaled_mm with 1x128/128x128 scales on {device:?}"
                ),
            },
            Err(e) => Selection {
                backend: Backend::Emulated,
                reason: format!("fp8 backend: emulated (native unavailable: {e:#})"),
            },
        }),
    }
}

/// Runs one block-scaled `_scaled_mm` on `device` and checks it against the emulation.
fn probe_native(device: Device) -> Result<()> {
    if !device.is_cuda() {
        bail!("{device:?} is not a CUDA device");
    }
    let opts = (Kind::Float, device);
    let a = quantize(
        &Tensor::randn([128, 256], opts),
        Granularity::Tile,
        ScaleMode::Exact,
    )?;
    let b = quantize(
        &Tensor::randn([128, 256], opts),
        Granularity::Block,
        ScaleMode::Exact,
    )?;
    let native = Backend::Native.gemm(&a, &b)?;
    let emulated = Backend::Emulated.gemm(&a, &b)?;
    let err = f64::try_from((native - &emulated).abs().max())?;
    let scale = f64::try_from(emulated.abs().max())?;
    if err > 1e-3 * scale {
        bail!("probe GEMM disagrees with the emulation (max error {err:.3e} of {scale:.3e})");
    }
    Ok(())
}

impl Backend {
    /// `a · bᵀ` in FP32, `[a.rows, b.rows]`. `a` is tile-scaled; `b` tile- or block-scaled; both
    /// share the contraction dimension as their columns.
    pub fn gemm(self, a: &Quantized, b: &Quantized) -> Result<Tensor> {
        if a.cols != b.cols || a.granularity != Granularity::Tile {
            bail!(
                "fp8 gemm: operands {}x{} (tiles) and {}x{} do not contract",
                a.rows,
                a.cols,
                b.rows,
                b.cols
            );
        }
        match self {
            // FP32 accumulation even when the caller runs under BF16 autocast.
            Backend::Emulated => Ok(crate::autocast::bf16(a.data.device(), false, || {
                a.dequantize().matmul(&b.dequantize().tr())
            })),
            Backend::Native => native_gemm(a, b),
        }
    }
}

/// Output dtype of the native GEMM, fixed by the first call that succeeds.
static NATIVE_OUT: OnceLock<Kind> = OnceLock::new();

/// `_scaled_mm(A [M,K] row-major, B [K,N] column-major)`. Scale layouts as libtorch checks them:
/// A's 1×128 scales `[M, K/128]` outer-dim-major (stride (1, M)); for B it inspects `scale_b.t()`,
/// which must be `[N/128, K/128]` row-major for 128×128 blocks and `[N, K/128]` with stride
/// (1, N) for 1×128 tiles. FP32 output is preferred (Wgrad feeds FP32 master gradients); where
/// the block-scaled kernel only writes BF16, that is used instead.
fn native_gemm(a: &Quantized, b: &Quantized) -> Result<Tensor> {
    let scale_a = a.scales.tr().contiguous().tr();
    let scale_b = match b.granularity {
        Granularity::Block => b.scales.contiguous().tr(),
        Granularity::Tile => b.scales.tr().contiguous(),
    };
    let run = |out: Kind| {
        a.data.f_internal_scaled_mm(
            &b.data.tr(),
            &scale_a,
            &scale_b,
            None::<Tensor>,
            None::<Tensor>,
            out,
            false,
        )
    };
    let out = match NATIVE_OUT.get() {
        Some(&kind) => run(kind)?,
        None => match run(Kind::Float) {
            Ok(out) => {
                let _ = NATIVE_OUT.set(Kind::Float);
                out
            }
            Err(fp32) => {
                let out = run(Kind::BFloat16)
                    .with_context(|| format!("_scaled_mm with FP32 output failed too: {fp32}"))?;
                let _ = NATIVE_OUT.set(Kind::BFloat16);
                out
            }
        },
    };
    Ok(out
        .to_kind(Kind::Float)
        .narrow(0, 0, a.rows)
        .narrow(1, 0, b.rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_emulated_on_cpu_with_a_reason() {
        let s = select(BackendChoice::Auto, Device::Cpu).unwrap();
        assert_eq!(s.backend, Backend::Emulated);
        assert!(
            s.reason.contains("emulated") && s.reason.contains("not a CUDA device"),
            "{}",
            s.reason
        );
        assert!(select(BackendChoice::Native, Device::Cpu).is_err());
        assert_eq!(
            select(BackendChoice::Emulated, Device::Cpu)
                .unwrap()
                .backend,
            Backend::Emulated
        );
    }

    #[test]
    fn backend_choice_parses() {
        assert_eq!(
            "native".parse::<BackendChoice>().unwrap(),
            BackendChoice::Native
        );
        assert!("fp16".parse::<BackendChoice>().is_err());
    }

    /// Where the probe passes (Hopper), native agrees with the emulation on ragged shapes for both
    /// scale layouts of the second operand; elsewhere `auto` must have fallen back.
    #[test]
    fn native_matches_emulated_where_available() {
        let device = Device::cuda_if_available();
        if probe_native(device).is_err() {
            assert_eq!(
                select(BackendChoice::Auto, device).unwrap().backend,
                Backend::Emulated
            );
            return;
        }
        let q = |rows, g| {
            let t = Tensor::randn([rows, 200], (Kind::Float, device));
            quantize(&t, g, ScaleMode::Exact).unwrap()
        };
        let x = q(300, Granularity::Tile);
        for b in [q(130, Granularity::Block), q(130, Granularity::Tile)] {
            let native = Backend::Native.gemm(&x, &b).unwrap();
            let emulated = Backend::Emulated.gemm(&x, &b).unwrap();
            assert_eq!(native.size(), [300, 130]);
            assert!(native.allclose(&emulated, 1e-4, 1e-3, false));
        }
    }
}
