// What the trainer reports about the GPU it runs on and tch does not expose: the device's name
// (to look up its peak FLOP/s for MFU), its memory (to refuse a run that cannot fit) and the CUDA
// caching allocator's peak (memory per run).
// Compiled with the CUDA headers when build.rs finds them (WHALE_CUDA); without, each call fails.
#include "cpp_error.h"

#ifdef WHALE_CUDA
#include <ATen/cuda/CUDAContextLight.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <stdexcept>

namespace {
template <typename F>
int guarded(char* err, int64_t err_len, F body) {
  try {
#ifdef WHALE_CUDA
    body();
    return 0;
#else
    (void)body;
    throw std::runtime_error(
        "this whale-train was built without the CUDA headers (site-packages/nvidia/cu13 beside "
        "libtorch): run scripts/setup and rebuild");
#endif
  } catch (const std::exception& e) {
    write_err(e.what(), err, err_len);
    return 1;
  }
}
}  // namespace

extern "C" {

// The name of CUDA device `index` (e.g. "NVIDIA H100 80GB HBM3"), NUL-terminated into `name`.
int whale_cuda_device_name(int index, char* name, int64_t name_len, char* err, int64_t err_len) {
  return guarded(err, err_len, [&] {
#ifdef WHALE_CUDA
    write_err(at::cuda::getDeviceProperties(index)->name, name, name_len);
#endif
  });
}

// The memory of CUDA device `index`, in bytes.
int whale_cuda_total_memory(int index, int64_t* bytes, char* err, int64_t err_len) {
  return guarded(err, err_len, [&] {
#ifdef WHALE_CUDA
    *bytes = static_cast<int64_t>(at::cuda::getDeviceProperties(index)->totalGlobalMem);
#endif
  });
}

// The most bytes the caching allocator had allocated to tensors on device `index`, and reserved
// from the driver, since the process started.
int whale_cuda_memory_peak(int index, int64_t* allocated, int64_t* reserved, char* err,
                           int64_t err_len) {
  return guarded(err, err_len, [&] {
#ifdef WHALE_CUDA
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    using Agg = c10::CachingAllocator::StatType;
    *allocated = stats.allocated_bytes[static_cast<size_t>(Agg::AGGREGATE)].peak;
    *reserved = stats.reserved_bytes[static_cast<size_t>(Agg::AGGREGATE)].peak;
#endif
  });
}

}
