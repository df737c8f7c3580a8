// A libtorch autograd node whose backward is a Rust function.
//
// tch exposes no way to define an autograd function, and the FP8 recipe needs one: its backward
// quantizes the incoming gradient, which no composition of differentiable ops can express (their
// backward is linear in the gradient). This file knows nothing about FP8: Rust computes the
// forward output under no_grad, hands it here with the tensors to save, and the node calls back
// into Rust for the input gradients. See `custom_grad.rs`.
#include "cpp_error.h"

#include <torch/csrc/autograd/custom_function.h>

#include <cstring>
#include <string>
#include <vector>

extern "C" {
// Rust backward: reads `n_saved` saved tensors and the output gradient, writes `n_inputs` owned
// tensor pointers (null = no gradient) into `grads`. Returns 0, or non-zero with a message in `err`.
typedef int (*whale_backward_fn)(int64_t flags, at::Tensor** saved, int64_t n_saved,
                                 at::Tensor* grad_output, at::Tensor** grads, int64_t n_inputs,
                                 char* err, int64_t err_len);
}

namespace {

constexpr int64_t kScalarArgs = 4;  // output, saved, backward_fn, flags in RustFunction::forward.

struct RustFunction : public torch::autograd::Function<RustFunction> {
  // `output` and `saved` are passed by address so autograd does not count them as inputs.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                at::TensorList inputs, int64_t output,
                                                int64_t saved, int64_t backward_fn,
                                                int64_t flags) {
    auto* saved_list = reinterpret_cast<std::vector<at::Tensor>*>(saved);
    ctx->save_for_backward(*saved_list);
    ctx->saved_data["backward_fn"] = backward_fn;
    ctx->saved_data["flags"] = flags;
    ctx->saved_data["n_inputs"] = static_cast<int64_t>(inputs.size());
    return {*reinterpret_cast<at::Tensor*>(output)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    auto n_inputs = ctx->saved_data["n_inputs"].toInt();
    auto fn = reinterpret_cast<whale_backward_fn>(ctx->saved_data["backward_fn"].toInt());
    std::vector<at::Tensor*> saved_ptrs;
    for (auto& t : saved) saved_ptrs.push_back(&t);
    std::vector<at::Tensor*> grads(static_cast<size_t>(n_inputs), nullptr);
    char err[1024] = {0};
    int rc = fn(ctx->saved_data["flags"].toInt(), saved_ptrs.data(),
                static_cast<int64_t>(saved_ptrs.size()), &grad_outputs[0], grads.data(), n_inputs,
                err, sizeof(err));
    torch::autograd::variable_list out;
    for (auto* g : grads) {
      out.push_back(g ? *g : at::Tensor());
      delete g;
    }
    TORCH_CHECK(rc == 0, "whale custom backward failed: ", err);
    out.resize(static_cast<size_t>(n_inputs + kScalarArgs));
    return out;
  }
};

}  // namespace

extern "C" {
// Wraps `output` (computed by the caller without autograd) in a node whose backward is
// `backward_fn`. On success stores a new tensor in `*result` and returns 0.
int whale_custom_grad_apply(at::Tensor** inputs, int64_t n_inputs, at::Tensor* output,
                            at::Tensor** saved, int64_t n_saved, whale_backward_fn backward_fn,
                            int64_t flags, at::Tensor** result, char* err, int64_t err_len) {
  try {
    std::vector<at::Tensor> in;
    for (int64_t i = 0; i < n_inputs; ++i) in.push_back(*inputs[i]);
    std::vector<at::Tensor> sv;
    for (int64_t i = 0; i < n_saved; ++i) sv.push_back(*saved[i]);
    auto outs = RustFunction::apply(at::TensorList(in), reinterpret_cast<int64_t>(output),
                                    reinterpret_cast<int64_t>(&sv),
                                    reinterpret_cast<int64_t>(backward_fn), flags);
    *result = new at::Tensor(outs[0]);
    return 0;
  } catch (const std::exception& e) {
    write_err(e.what(), err, err_len);
    return 1;
  }
}
}
