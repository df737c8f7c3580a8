//! Autocast scopes on the device the model runs on. tch's `autocast` toggles the CUDA autocast
//! only and keeps its default dtype, FP16; the trainer wants BF16 (DeepSeek-V3's training dtype, no
//! loss scaling needed) and the same code path on CPU, so the tests exercise what the GPU runs.

use std::ffi::c_int;

use tch::Device;

use crate::cpp::check;

extern "C" {
    fn whale_autocast_enter(
        cuda: c_int,
        enabled: c_int,
        dtype: c_int,
        prev_enabled: *mut c_int,
        prev_dtype: *mut c_int,
        err: *mut std::ffi::c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_autocast_exit(cuda: c_int, prev_enabled: c_int, prev_dtype: c_int);
    fn whale_autocast_enabled(cuda: c_int) -> c_int;
}

/// Whether autocast is on for `device`'s type here (in a `bf16` scope with `on`).
pub fn enabled(device: Device) -> bool {
    // SAFETY: reads thread-local state.
    unsafe { whale_autocast_enabled(device.is_cuda() as c_int) != 0 }
}

/// Restores the autocast state a scope replaced, also when the scope unwinds.
struct Restore {
    cuda: c_int,
    enabled: c_int,
    dtype: c_int,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: plain values; pairs with the successful enter in `autocast`.
        unsafe { whale_autocast_exit(self.cuda, self.enabled, self.dtype) }
    }
}

/// c10::ScalarType::BFloat16.
const BF16: c_int = 15;

/// Runs `f` with autocast on `device`'s type turned on in BF16 (`on`) or off (e.g. to keep a
/// reference GEMM in FP32 inside an autocast region), then restores the previous setting.
pub fn bf16<T>(device: Device, on: bool, f: impl FnOnce() -> T) -> T {
    let cuda = device.is_cuda() as c_int;
    let (mut enabled, mut dtype) = (0, 0);
    check("autocast", |err, len| unsafe {
        // SAFETY: the out-pointers are live locals; the buffer is `check`'s.
        whale_autocast_enter(cuda, on as c_int, BF16, &mut enabled, &mut dtype, err, len)
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let _restore = Restore {
        cuda,
        enabled,
        dtype,
    };
    f()
}

#[cfg(test)]
mod tests {
    use tch::{Kind, Tensor};

    use super::*;

    #[test]
    fn cpu_autocast_runs_linears_in_bf16_and_restores_the_state() {
        let x = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([3, 8], (Kind::Float, Device::Cpu));
        let y = bf16(Device::Cpu, true, || {
            let inner = bf16(Device::Cpu, false, || {
                assert!(!enabled(Device::Cpu));
                x.linear::<Tensor>(&w, None)
            });
            assert_eq!(inner.kind(), Kind::Float, "a nested scope turns it off");
            assert!(enabled(Device::Cpu));
            x.linear::<Tensor>(&w, None)
        });
        assert_eq!(y.kind(), Kind::BFloat16);
        assert!(!enabled(Device::Cpu));
        assert_eq!(x.linear::<Tensor>(&w, None).kind(), Kind::Float, "restored");
        let err = (y.to_kind(Kind::Float) - x.linear::<Tensor>(&w, None))
            .abs()
            .max()
            .double_value(&[]);
        assert!(err > 0.0 && err < 0.1, "bf16 rounding {err}");
    }
}
