//! What the trainer reports about its GPU: the device's name, the dense BF16 peak that MFU is
//! measured against (looked up by that name), its memory, and the CUDA caching allocator's peak.

use std::ffi::{c_char, c_int, CStr};

use anyhow::{bail, Result};
use serde::Serialize;
use tch::Device;

use crate::cpp::check;

extern "C" {
    fn whale_cuda_device_name(
        index: c_int,
        name: *mut c_char,
        name_len: i64,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_cuda_total_memory(
        index: c_int,
        bytes: *mut i64,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_cuda_memory_peak(
        index: c_int,
        allocated: *mut i64,
        reserved: *mut i64,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
}

/// Dense (no sparsity) BF16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets, by a fragment
/// of the name CUDA reports; the first fragment found in the name wins, so variants come first.
const PEAK_BF16_TFLOPS: [(&str, f64); 6] = [
    ("H200 NVL", 835.0),
    ("H200", 989.0),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0), // SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
];

/// The dense BF16 peak of the GPU called `name`, when whale knows it.
pub fn peak_bf16_tflops(name: &str) -> Option<f64> {
    PEAK_BF16_TFLOPS
        .iter()
        .find(|(fragment, _)| name.contains(fragment))
        .map(|&(_, tflops)| tflops)
}

fn cuda_index(device: Device) -> Result<c_int> {
    match device {
        Device::Cuda(i) => Ok(i as c_int),
        other => bail!("{other:?} is not a CUDA device"),
    }
}

/// The name CUDA gives the GPU `device` (e.g. "NVIDIA H100 80GB HBM3").
pub fn device_name(device: Device) -> Result<String> {
    let index = cuda_index(device)?;
    let mut name = [0 as c_char; 256];
    check("reading the GPU's name", |err, len| unsafe {
        // SAFETY: `name` outlives the call, which NUL-terminates what it writes.
        whale_cuda_device_name(index, name.as_mut_ptr(), name.len() as i64, err, len)
    })?;
    // SAFETY: zero-initialized and NUL-terminated by the C++ side.
    Ok(unsafe { CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

/// The memory of the GPU `device`, in bytes.
pub fn total_memory(device: Device) -> Result<u64> {
    let index = cuda_index(device)?;
    let mut bytes = 0i64;
    check("reading the GPU's memory size", |err, len| unsafe {
        // SAFETY: the out-pointer is a live local.
        whale_cuda_total_memory(index, &mut bytes, err, len)
    })?;
    Ok(bytes as u64)
}

/// The most GPU memory a run held: bytes allocated to tensors, and reserved from the driver by
/// libtorch's caching allocator (what `nvidia-smi` sees, less the CUDA context).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryPeak {
    pub allocated_bytes: u64,
    pub reserved_bytes: u64,
}

/// The allocator's peaks on `device` since the process started.
pub fn memory_peak(device: Device) -> Result<MemoryPeak> {
    let index = cuda_index(device)?;
    let (mut allocated, mut reserved) = (0i64, 0i64);
    check("reading the GPU memory peak", |err, len| unsafe {
        // SAFETY: the out-pointers are live locals.
        whale_cuda_memory_peak(index, &mut allocated, &mut reserved, err, len)
    })?;
    Ok(MemoryPeak {
        allocated_bytes: allocated as u64,
        reserved_bytes: reserved as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_come_from_the_names_cuda_reports() {
        assert_eq!(peak_bf16_tflops("NVIDIA H100 80GB HBM3"), Some(989.0));
        assert_eq!(peak_bf16_tflops("NVIDIA H200"), Some(989.0));
        assert_eq!(peak_bf16_tflops("NVIDIA H100 PCIe"), Some(756.0));
        assert_eq!(peak_bf16_tflops("NVIDIA H200 NVL"), Some(835.0));
        assert_eq!(peak_bf16_tflops("NVIDIA A100-SXM4-80GB"), Some(312.0));
        assert_eq!(peak_bf16_tflops("NVIDIA GeForce RTX 4090"), None);
    }

    #[test]
    fn cpu_devices_are_refused_by_name() {
        let err = device_name(Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("not a CUDA device"), "{err}");
        assert!(memory_peak(Device::Cpu).is_err());
        assert!(total_memory(Device::Cpu).is_err());
    }
}
