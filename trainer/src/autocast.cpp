// Autocast on a chosen device type and dtype, which tch's `autocast` cannot express: it toggles the
// CUDA autocast only and leaves its dtype at libtorch's default, FP16. `src/autocast.rs` wraps this
// in a scope that restores the previous state.
#include "cpp_error.h"

#include <ATen/autocast_mode.h>

namespace {
c10::DeviceType device_type(int cuda) {
  return cuda != 0 ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
}
}  // namespace

extern "C" {

// Sets autocast of the device type (`cuda` != 0: CUDA, else CPU) to `enabled` in `dtype` (a
// c10::ScalarType code), entering one nesting level, and writes the state it replaced.
int whale_autocast_enter(int cuda, int enabled, int dtype, int* prev_enabled, int* prev_dtype,
                         char* err, int64_t err_len) {
  try {
    auto type = device_type(cuda);
    *prev_enabled = at::autocast::is_autocast_enabled(type) ? 1 : 0;
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(type));
    at::autocast::set_autocast_dtype(type, static_cast<at::ScalarType>(dtype));
    at::autocast::set_autocast_enabled(type, enabled != 0);
    at::autocast::increment_nesting();
    return 0;
  } catch (const std::exception& e) {
    write_err(e.what(), err, err_len);
    return 1;
  }
}

// Whether autocast of the device type (`cuda` != 0: CUDA, else CPU) is on.
int whale_autocast_enabled(int cuda) {
  return at::autocast::is_autocast_enabled(device_type(cuda)) ? 1 : 0;
}

// Leaves the nesting level `whale_autocast_enter` entered and restores the state it replaced; the
// outermost exit drops autocast's cache of casted weights.
void whale_autocast_exit(int cuda, int prev_enabled, int prev_dtype) {
  auto type = device_type(cuda);
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(type, prev_enabled != 0);
  at::autocast::set_autocast_dtype(type, static_cast<at::ScalarType>(prev_dtype));
}
}
