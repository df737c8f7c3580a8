// Host-to-GPU copies that do not wait for the GPU (`src/host_memory.rs`). A plain copy of a CPU
// tensor to CUDA synchronizes the stream after it (libtorch's blocking copy), so every batch
// uploaded that way stalls the CPU until the GPU has run all queued work. A copy from page-locked
// memory with non_blocking is queued like a kernel; libtorch's pinned host allocator keeps the
// source alive until the copy has run.
#include "cpp_error.h"

#include <ATen/ATen.h>

extern "C" {

// A page-locked copy of `host` sent to CUDA device `index` without waiting; stores the device
// tensor in `*result`.
int whale_upload(at::Tensor* host, int index, at::Tensor** result, char* err, int64_t err_len) {
  try {
    // pin_memory() without a device: passing one is deprecated (and warns) in torch 2.x.
    auto pinned = host->pin_memory();
    *result = new at::Tensor(pinned.to(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index)),
                                       /*non_blocking=*/true));
    return 0;
  } catch (const std::exception& e) {
    write_err(e.what(), err, err_len);
    return 1;
  }
}
}
