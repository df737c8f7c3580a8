//! Fine-grained E4M3 quantization (DeepSeek-V3 §3.3).
//!
//! A 2-D operand is cut along its last (contraction) dimension into groups of 128 and each group
//! gets its own scale `s = max(amax, 1e-4) / 448`, so one outlier only coarsens its own group:
//! activations and gradients per 1×128 tile ([`Granularity::Tile`]), weights per 128×128 block
//! ([`Granularity::Block`]). The payload `x / s` is rounded to E4M3 by libtorch's own
//! `Float8e4m3fn` cast (round to nearest even), which is what the native kernels consume too.
//!
//! Payloads are zero-padded to whole groups (columns to 128; rows to 16 for tiles, as
//! `_scaled_mm` wants, and to 128 for blocks), so every scale covers a full group and the padding,
//! being zero, changes no amax and no product.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// Largest finite E4M3 ("fn" variant: no infinities) value.
pub const E4M3_MAX: f64 = 448.0;
/// Group width along the contraction dimension, and the side of a weight block.
pub const GROUP: i64 = 128;
/// Floor under amax: an all-zero group still gets a finite, non-zero scale.
pub const AMAX_FLOOR: f64 = 1e-4;
/// Row alignment of tile-scaled payloads (`_scaled_mm` needs dimensions divisible by 16).
const TILE_ROW_ALIGN: i64 = 16;

/// How a scale is derived from a group's amax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScaleMode {
    /// `s = max(amax, 1e-4) / 448`: the full E4M3 range is used.
    #[default]
    Exact,
    /// `s` rounded up to a power of two, so rescaling is exact (DeepSeek's variant).
    PowerOfTwo,
}

impl std::str::FromStr for ScaleMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exact" => Ok(Self::Exact),
            "pow2" => Ok(Self::PowerOfTwo),
            _ => bail!("unknown FP8 scale mode {s:?} (expected exact or pow2)"),
        }
    }
}

/// Which groups share a scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// 1×128: one scale per row per 128 columns (activations, gradients).
    Tile,
    /// 128×128: one scale per block (weights).
    Block,
}

/// An E4M3 payload with its FP32 scales.
#[derive(Debug)]
pub struct Quantized {
    /// `Float8e4m3fn`, `[padded rows, padded cols]`.
    pub data: Tensor,
    /// FP32, `[padded rows, padded cols / 128]` for tiles, `[.. / 128, .. / 128]` for blocks.
    pub scales: Tensor,
    pub granularity: Granularity,
    /// Logical (unpadded) shape.
    pub rows: i64,
    pub cols: i64,
}

fn round_up(n: i64, m: i64) -> i64 {
    (n + m - 1) / m * m
}

/// The scale for a group whose largest magnitude is `amax` (elementwise over a tensor of amaxes).
pub fn scale_from_amax(amax: &Tensor, mode: ScaleMode) -> Tensor {
    let scale = amax.clamp_min(AMAX_FLOOR) / E4M3_MAX;
    match mode {
        ScaleMode::Exact => scale,
        ScaleMode::PowerOfTwo => scale.log2().ceil().exp2(),
    }
}

/// Quantizes a 2-D tensor. Refuses NaN and infinities (on CPU; see below): a scale computed from
/// them would silently turn the whole group into NaN, and in training that means a diverged step
/// that should stop.
pub fn quantize(x: &Tensor, granularity: Granularity, mode: ScaleMode) -> Result<Quantized> {
    let (rows, cols) = x.size2()?;
    let row_align = match granularity {
        Granularity::Tile => TILE_ROW_ALIGN,
        Granularity::Block => GROUP,
    };
    let (rp, cp) = (round_up(rows, row_align), round_up(cols, GROUP));
    let padded = x
        .to_kind(Kind::Float)
        .f_constant_pad_nd([0, cp - cols, 0, rp - rows])?;
    // reshape, not view: with nothing to pad, `padded` may keep a transposed input's strides.
    let grouped = match granularity {
        Granularity::Tile => padded.reshape([rp, cp / GROUP, GROUP]),
        Granularity::Block => padded.reshape([rp / GROUP, GROUP, cp / GROUP, GROUP]),
    };
    let group_dims: &[i64] = match granularity {
        Granularity::Tile => &[2],
        Granularity::Block => &[1, 3],
    };
    let amax = grouped.abs().amax(group_dims, true);
    // On CUDA the check would cost a host sync per quantization and stall the stream; there a
    // NaN scale turns the output into NaN, which the trainer's per-step loss check stops on.
    if !x.device().is_cuda() && amax.numel() > 0 && !bool::try_from(amax.isfinite().all())? {
        bail!("fp8: refusing to quantize a tensor that holds NaN or infinity");
    }
    let scale = scale_from_amax(&amax, mode);
    let data = (grouped / &scale)
        .clamp(-E4M3_MAX, E4M3_MAX)
        .to_kind(Kind::Float8e4m3fn)
        .view([rp, cp]);
    let scales = match granularity {
        Granularity::Tile => scale.view([rp, cp / GROUP]),
        Granularity::Block => scale.view([rp / GROUP, cp / GROUP]),
    };
    Ok(Quantized {
        data,
        scales,
        granularity,
        rows,
        cols,
    })
}

impl Quantized {
    /// FP32 values `payload × scale` with the padding cut off: `[rows, cols]`. Tile payloads may
    /// also be [`compact`](Self::compact).
    pub fn dequantize(&self) -> Tensor {
        let payload = self.data.to_kind(Kind::Float);
        let (r, c) = (payload.size()[0], payload.size()[1]);
        let values = match self.granularity {
            Granularity::Tile => {
                let groups = self.scales.size()[1];
                let per_element = self
                    .scales
                    .narrow(0, 0, r)
                    .unsqueeze(-1)
                    .expand([r, groups, GROUP], false)
                    .reshape([r, groups * GROUP])
                    .narrow(1, 0, c);
                payload * per_element
            }
            Granularity::Block => {
                let blocks = payload.view([r / GROUP, GROUP, c / GROUP, GROUP]);
                (blocks * self.scales.view([r / GROUP, 1, c / GROUP, 1])).view([r, c])
            }
        };
        values.narrow(0, 0, self.rows).narrow(1, 0, self.cols)
    }

    /// The same tile-scaled values without padding (what a linear keeps for its backward):
    /// 1 byte per element plus 4 bytes per 128.
    pub fn compact(&self) -> Quantized {
        assert_eq!(
            self.granularity,
            Granularity::Tile,
            "only tile payloads compact"
        );
        Quantized {
            data: self
                .data
                .narrow(0, 0, self.rows)
                .narrow(1, 0, self.cols)
                .contiguous(),
            scales: self.scales.narrow(0, 0, self.rows).contiguous(),
            granularity: Granularity::Tile,
            rows: self.rows,
            cols: self.cols,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// E4M3 round-to-nearest-even written from the format's definition: 3 mantissa bits, exponent
    /// bias 7, so normals have ulp 2^(e-3) for |v| in [2^e, 2^(e+1)), e ≥ -6, and subnormals
    /// below 2^-6 have ulp 2^-9.
    fn e4m3_reference(v: f32) -> f32 {
        let a = v.abs();
        if a == 0.0 {
            return v;
        }
        let e = a.log2().floor().max(-6.0);
        let ulp = 2f32.powf(e - 3.0);
        let q = a / ulp;
        let mut r = q.round();
        if (q - q.trunc() - 0.5).abs() < f32::EPSILON && r % 2.0 != 0.0 {
            r -= 1.0; // tie: round half to even
        }
        (r * ulp).min(E4M3_MAX as f32).copysign(v)
    }

    fn floats(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
    }

    #[test]
    fn e4m3_cast_matches_definition() {
        let mut values = vec![
            0.0,
            448.0,
            -448.0,
            1.0625,
            1.1875,
            0.001953125,
            0.0029296875,
        ];
        values.extend((0..4000).map(|i| ((i as f32) * 0.37).sin() * 2f32.powi(i % 20 - 11)));
        let x = Tensor::from_slice(&values);
        let cast = floats(&x.to_kind(Kind::Float8e4m3fn));
        for (v, got) in values.iter().zip(cast) {
            assert_eq!(got, e4m3_reference(*v), "E4M3({v})");
        }
        // Ties go to the even mantissa: 1 + 1/16 → 1, 1 + 3/16 → 1.25.
        assert_eq!(e4m3_reference(1.0625), 1.0);
        assert_eq!(e4m3_reference(1.1875), 1.25);
    }

    #[test]
    fn tile_scale_is_amax_over_448_and_amax_maps_to_448() {
        let x = Tensor::randn([4, 256], (Kind::Float, tch::Device::Cpu));
        let q = quantize(&x, Granularity::Tile, ScaleMode::Exact).unwrap();
        assert_eq!(q.scales.size(), [16, 2]);
        let amax = x.view([4, 2, 128]).abs().amax([2], false);
        let want = amax / E4M3_MAX;
        assert!(q.scales.narrow(0, 0, 4).allclose(&want, 1e-7, 0.0, false));
        let payload = q
            .data
            .to_kind(Kind::Float)
            .narrow(0, 0, 4)
            .view([4, 2, 128]);
        let peak = payload.abs().amax([2], false);
        assert!(peak.allclose(
            &Tensor::full([4, 2], E4M3_MAX, (Kind::Float, tch::Device::Cpu)),
            0.0,
            0.0,
            false
        ));
    }

    #[test]
    fn zero_tiles_get_floor_scale_and_zero_payload() {
        let x = Tensor::zeros([2, 128], (Kind::Float, tch::Device::Cpu));
        let q = quantize(&x, Granularity::Tile, ScaleMode::Exact).unwrap();
        for s in floats(&q.scales) {
            assert!((s as f64 - AMAX_FLOOR / E4M3_MAX).abs() < 1e-12);
        }
        assert!(floats(&q.data).iter().all(|v| *v == 0.0));
        assert!(floats(&q.dequantize()).iter().all(|v| *v == 0.0));
    }

    #[test]
    fn amax_at_edge_of_range_round_trips_exactly() {
        // amax exactly 448 → scale 1: every E4M3 value in the tile survives unchanged.
        let mut row = vec![448.0f32, -448.0, 240.0, 0.015625, -3.5];
        row.resize(128, 1.0);
        let x = Tensor::from_slice(&row).view([1, 128]);
        let q = quantize(&x, Granularity::Tile, ScaleMode::Exact).unwrap();
        assert_eq!(floats(&q.scales)[0], 1.0);
        assert_eq!(floats(&q.dequantize()), row);
        // A tile whose amax is below the floor is scaled by the floor, not by its amax.
        let tiny = Tensor::full([1, 128], 1e-6, (Kind::Float, tch::Device::Cpu));
        let q = quantize(&tiny, Granularity::Tile, ScaleMode::Exact).unwrap();
        assert!((floats(&q.scales)[0] as f64 - AMAX_FLOOR / E4M3_MAX).abs() < 1e-12);
    }

    #[test]
    fn nan_and_infinity_are_refused() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut v = vec![1.0f32; 300];
            v[257] = bad;
            let x = Tensor::from_slice(&v).view([2, 150]);
            for g in [Granularity::Tile, Granularity::Block] {
                let err = quantize(&x, g, ScaleMode::Exact).unwrap_err();
                assert!(err.to_string().contains("NaN"), "{err}");
                // On a GPU (no sync): the poisoned group dequantizes to NaN, never to finite values.
                if tch::Cuda::is_available() {
                    let q = quantize(&x.to_device(tch::Device::Cuda(0)), g, ScaleMode::Exact);
                    assert!(bool::try_from(q.unwrap().dequantize().isnan().any()).unwrap());
                }
            }
        }
    }

    #[test]
    fn ragged_shapes_are_padded_to_whole_groups() {
        let x = Tensor::randn([5, 200], (Kind::Float, tch::Device::Cpu));
        let t = quantize(&x, Granularity::Tile, ScaleMode::Exact).unwrap();
        assert_eq!(t.data.size(), [16, 256]);
        assert_eq!(t.scales.size(), [16, 2]);
        // The second tile of each row is 72 real values: its scale uses those only.
        let want = x.narrow(1, 128, 72).abs().amax([1], false) / E4M3_MAX;
        assert!(t
            .scales
            .narrow(0, 0, 5)
            .select(1, 1)
            .allclose(&want, 1e-7, 0.0, false));
        assert_eq!(t.dequantize().size(), [5, 200]);
        let compact = t.compact();
        assert_eq!(
            (compact.data.size(), compact.scales.size()),
            (vec![5, 200], vec![5, 2])
        );
        assert!(compact.dequantize().equal(&t.dequantize()));

        let w = Tensor::randn([130, 260], (Kind::Float, tch::Device::Cpu));
        let b = quantize(&w, Granularity::Block, ScaleMode::Exact).unwrap();
        assert_eq!(b.data.size(), [256, 384]);
        assert_eq!(b.scales.size(), [2, 3]);
        for (i, r0, nr) in [(0, 0, 128), (1, 128, 2)] {
            for (j, c0, nc) in [(0, 0, 128), (1, 128, 128), (2, 256, 4)] {
                let amax = w.narrow(0, r0, nr).narrow(1, c0, nc).abs().max();
                let want = f64::try_from(amax).unwrap() / E4M3_MAX;
                let got = f64::try_from(b.scales.get(i).get(j)).unwrap();
                assert!((got - want).abs() <= 1e-7 * want, "block ({i},{j})");
            }
        }
        assert_eq!(b.dequantize().size(), [130, 260]);
    }

    /// Backward passes quantize transposes (`gᵀ`, `xᵀ`), including ones with nothing to pad.
    #[test]
    fn transposed_inputs_quantize_like_contiguous_ones() {
        let x = Tensor::randn([256, 32], (Kind::Float, tch::Device::Cpu));
        let a = quantize(&x.tr(), Granularity::Tile, ScaleMode::Exact).unwrap();
        let b = quantize(&x.tr().contiguous(), Granularity::Tile, ScaleMode::Exact).unwrap();
        assert!(a.dequantize().equal(&b.dequantize()));
        assert!(a.scales.equal(&b.scales));
    }

    /// Round to nearest with 3 mantissa bits: relative error ≤ 2^-4 in the normal range, absolute
    /// error ≤ half a subnormal ulp (2^-10 · scale) below it.
    #[test]
    fn dequantized_error_follows_from_three_mantissa_bits() {
        let x = Tensor::randn([64, 384], (Kind::Float, tch::Device::Cpu)) * 3.0;
        for (g, mode) in [
            (Granularity::Tile, ScaleMode::Exact),
            (Granularity::Block, ScaleMode::Exact),
            (Granularity::Tile, ScaleMode::PowerOfTwo),
        ] {
            let q = quantize(&x, g, mode).unwrap();
            let scale_max = f64::try_from(q.scales.max()).unwrap();
            let err = (q.dequantize() - &x).abs();
            let bound = (x.abs() * 0.0625).clamp_min(scale_max * 2f64.powi(-10));
            assert!(
                bool::try_from(err.le_tensor(&bound).all()).unwrap(),
                "{g:?} {mode:?}"
            );
        }
    }

    #[test]
    fn power_of_two_scales_are_powers_of_two_at_least_the_exact_scale() {
        let x = Tensor::randn([16, 256], (Kind::Float, tch::Device::Cpu)) * 7.0;
        let exact = quantize(&x, Granularity::Tile, ScaleMode::Exact).unwrap();
        let pow2 = quantize(&x, Granularity::Tile, ScaleMode::PowerOfTwo).unwrap();
        for (e, p) in floats(&exact.scales).into_iter().zip(floats(&pow2.scales)) {
            assert!(p >= e && p < 2.0 * e, "{p} vs {e}");
            assert_eq!(p.log2().fract(), 0.0, "{p}");
        }
    }
}
