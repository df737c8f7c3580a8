// The PyTorch profiler (libkineto, what torch.profiler and torchtitan's profiling drive) from Rust,
// which tch does not expose: start and stop it, mark optimizer steps as `ProfilerStep#N` ranges (the
// names torch.profiler gives them, so Perfetto and TensorBoard show steps), save the Chrome trace,
// and hand the recorded events to `src/profile.rs`, which summarises them.
#include "cpp_error.h"

#include <ATen/record_function.h>
#include <kineto/ActivityType.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdlib>
#include <memory>
#include <set>
#include <string>

namespace prof = torch::autograd::profiler;
namespace impl = torch::profiler::impl;

namespace {
std::set<impl::ActivityType> activities(int cuda) {
  std::set<impl::ActivityType> set{impl::ActivityType::CPU};
  if (cuda != 0) set.insert(impl::ActivityType::CUDA);
  return set;
}

impl::ProfilerConfig config() {
  // Operators and kernels with their times; no shapes, stacks or memory events, which would
  // multiply the trace's size and the profiler's own overhead.
  return impl::ProfilerConfig(impl::ProfilerState::KINETO);
}

// A step's range: the RecordFunction and the name it was opened with.
struct StepMark {
  std::string name;
  at::RecordFunction range{at::RecordScope::USER_SCOPE};
};
}  // namespace

extern "C" {

// Starts recording operators on the CPU, and kernels and copies on the GPU when `cuda` != 0.
int whale_profiler_start(int cuda, char* err, int64_t err_len) {
  try {
    // Without a GPU, libkineto logs an error for each GPU query it makes (no device found),
    // which would read as a failure: level 5 keeps only its user errors (torchtitan sets the
    // same). On a GPU its errors (CUPTI permissions, say) matter and stay. A KINETO_LOG_LEVEL
    // the user set wins.
    if (cuda == 0) setenv("KINETO_LOG_LEVEL", "5", /*overwrite=*/0);
    auto set = activities(cuda);
    prof::prepareProfiler(config(), set);
    prof::enableProfiler(config(), set);
    return 0;
  } catch (const std::exception& e) {
    write_err(e.what(), err, err_len);
    return 1;
  }
}

// Stops recording, saves the Chrome trace to `trace_path` when it is not empty, and hands over
// the recorded events (free them with `whale_profile_free`).
int whale_profiler_stop(const char* trace_path, void** result, char* err, int64_t err_len) {
  try {
    auto recorded = prof::disableProfiler();
    if (trace_path != nullptr && trace_path[0] != '\0') recorded->save(trace_path);
    *result = recorded.release();
    return 0;
  } catch (const std::exception& e) {
    write_err(e.what(), err, err_len);
    return 1;
  }
}

int64_t whale_profile_len(void* result) {
  return static_cast<int64_t>(static_cast<prof::ProfilerResult*>(result)->events().size());
}

// Event `i`: its name (NUL-terminated, cut to fit `name`), what it is (`EventKind` of
// profile.rs: 0 an operator or range on a CPU thread, 1 a call into the CUDA runtime or driver,
// 2 a kernel, copy or fill on the GPU, 3 anything else), its start and end in ns, and its thread
// (the operators' ids and the runtime calls' ids are two numberings).
void whale_profile_event(void* result, int64_t i, char* name, int64_t name_len, int* kind,
                         uint64_t* start_ns, uint64_t* end_ns, uint64_t* thread) {
  using libkineto::ActivityType;
  const auto& e = static_cast<prof::ProfilerResult*>(result)->events().at(static_cast<size_t>(i));
  write_err(e.name(), name, name_len);
  switch (static_cast<ActivityType>(e.activityType())) {
    case ActivityType::CPU_OP:
    case ActivityType::USER_ANNOTATION:
      *kind = 0;
      break;
    case ActivityType::CUDA_RUNTIME:
    case ActivityType::CUDA_DRIVER:
      *kind = 1;
      break;
    case ActivityType::CONCURRENT_KERNEL:
    case ActivityType::GPU_MEMCPY:
    case ActivityType::GPU_MEMSET:
      *kind = 2;
      break;
    default:
      *kind = 3;
  }
  *start_ns = e.startNs();
  *end_ns = e.endNs();
  *thread = e.startThreadId();
}

void whale_profile_free(void* result) { delete static_cast<prof::ProfilerResult*>(result); }

// Opens the range `name` on this thread (recorded only while the profiler runs); close it with
// `whale_step_mark_end` on the same thread.
void* whale_step_mark_begin(const char* name) {
  auto mark = std::make_unique<StepMark>();
  mark->name = name;
  if (mark->range.isActive()) mark->range.before(std::string_view(mark->name));
  return mark.release();
}

void whale_step_mark_end(void* mark) { delete static_cast<StepMark*>(mark); }
}
