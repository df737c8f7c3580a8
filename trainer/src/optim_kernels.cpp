// Three libtorch entry points that tch 0.24 does not wrap, used by `optim.rs`:
//
// - `at::_fused_adamw_`, the multi-tensor AdamW kernel behind `torch.optim.AdamW(fused=True)`: one
//   vectorized pass reads param, grad and both moments and writes param and moments. The same update
//   written with tch's per-tensor ops takes ~10 passes and temporaries; on CPU, where the step is
//   memory bound, that is most of the optimizer's time.
// - Dropping a parameter's `.grad` (`zero_grad(set_to_none=True)`): the next backward then hands
//   its gradient buffer over instead of adding it into a zeroed one, which saves two passes.
// - `at::_foreach_norm`, the norms of many tensors at once, as `clip_grad_norm_` takes them: on
//   CUDA a few multi-tensor kernels where a norm per tensor is a launch per parameter (hundreds a
//   step with fine-grained experts).
#include "cpp_error.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/stack.h>

#include <cstring>
#include <string>
#include <vector>

namespace {

std::vector<at::Tensor> list(at::Tensor** tensors, int64_t n) {
  std::vector<at::Tensor> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(*tensors[i]);
  return out;
}

}  // namespace

extern "C" {
// AdamW on `n` parameters with their gradients and moments (all the same dtype and device) at step
// `step` (a float tensor holding the 1-based step count, shared by all). Gradients are divided by
// `*grad_scale` first when it is not null. Returns 0, or non-zero with a message in `err`.
int whale_fused_adamw(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs,
                      at::Tensor** exp_avg_sqs, int64_t n, at::Tensor* step, double lr,
                      double beta1, double beta2, double weight_decay, double eps,
                      at::Tensor* grad_scale, char* err, int64_t err_len) {
  try {
    std::vector<at::Tensor> steps(static_cast<size_t>(n), *step);
    std::optional<at::Tensor> scale;
    if (grad_scale != nullptr) scale = *grad_scale;
    at::_fused_adamw_(list(params, n), list(grads, n), list(exp_avgs, n), list(exp_avg_sqs, n), {},
                      steps, lr, beta1, beta2, weight_decay, eps, /*amsgrad=*/false,
                      /*maximize=*/false, scale, std::nullopt);
    return 0;
  } catch (const std::exception& e) {
    write_err(e.what(), err, err_len);
    return 1;
  }
}

// Drops the `.grad` of each of the `n` tensors.
void whale_clear_grads(at::Tensor** tensors, int64_t n) {
  for (int64_t i = 0; i < n; ++i) tensors[i]->mutable_grad().reset();
}

// The L2 norm of each of the `n` tensors (all on one device), stacked into a new float tensor
// `[n]` stored in `*result`. Returns 0, or non-zero with a message in `err`.
int whale_foreach_norms(at::Tensor** tensors, int64_t n, at::Tensor** result, char* err,
                        int64_t err_len) {
  try {
    *result = new at::Tensor(at::stack(at::_foreach_norm(list(tensors, n), 2)));
    return 0;
  } catch (const std::exception& e) {
    write_err(e.what(), err, err_len);
    return 1;
  }
}
}
