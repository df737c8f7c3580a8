// torch.distributed's C++ engine (c10d), which tch does not wrap, for `src/dist/`: the TCPStore
// rendezvous, the Gloo process group (CPU tensors) and the collectives data and expert parallelism
// need, each returning a `c10d::Work` that Rust waits on with a timeout.
//
// Gloo's headers: `ProcessGroupGloo.hpp` includes `<gloo/...>`, which the torch wheel does not
// ship. build.rs compiles this file against Debian's `libgloo-dev` headers (scripts/setup installs
// them) and never links Debian's libgloo: every gloo type appears in `ProcessGroupGloo` only behind
// `std::shared_ptr` / `std::unique_ptr`, so the class layout this file sees (what `make_intrusive`
// allocates) is independent of the gloo version, and this file calls nothing of gloo itself: only
// the constructor, `Options::create_default` and the virtual collectives that libtorch_cpu.so
// exports, all compiled against the gloo bundled in the wheel. Without those headers (build.rs
// finds none) the file still builds and creating a Gloo group fails with an error saying so.
//
// NCCL (CUDA tensors): `ProcessGroupNCCL.hpp` needs the CUDA runtime's and NCCL's headers, which
// the torch wheel's `nvidia-*` packages install beside it; build.rs defines USE_C10D_NCCL when it
// finds them. They are the versions libtorch_cuda.so was built against, so the `Options` this file
// allocates has the layout the exported constructor expects. Without them, creating an NCCL group
// fails with an error saying so.
#include "cpp_error.h"

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace {

using Store = c10::intrusive_ptr<c10d::Store>;
using Backend = c10::intrusive_ptr<c10d::Backend>;
using Work = c10::intrusive_ptr<c10d::Work>;

// Runs `body`, turning an exception into the error protocol of cpp_error.h (c10's errors without
// their C++ backtrace: the message is what a user needs).
template <typename F>
int guarded(char* err, int64_t err_len, F body) {
  try {
    body();
    return 0;
  } catch (const c10::Error& e) {
    write_err(e.what_without_backtrace(), err, err_len);
    return 1;
  } catch (const std::exception& e) {
    write_err(e.what(), err, err_len);
    return 1;
  }
}

// Hands a reference of `p` over to Rust, which gives it back to the matching `*_free`.
template <typename T>
void* release(c10::intrusive_ptr<T> p) {
  return p.release();
}

c10d::Backend* backend(void* pg) { return static_cast<c10d::Backend*>(pg); }

// A collective's Work, handed to Rust.
int launched(Work work, void** out) {
  *out = release(std::move(work));
  return 0;
}

extern "C" {
typedef void (*whale_grad_ready_fn)(void* ctx, int64_t index);
}

// Calls `ready(ctx, index)` after a parameter's gradient accumulator has added this backward's
// gradient to `.grad` (what DDP's Reducer hooks too): the moment to move that gradient into its
// bucket and, in the last backward of a step, for the bucket to start its all-reduce while the
// backward goes on.
struct GradReady : torch::autograd::FunctionPostHook {
  GradReady(whale_grad_ready_fn ready, void* ctx, int64_t index)
      : ready_(ready), ctx_(ctx), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    ready_(ctx_, index_);
    return outputs;
  }
  whale_grad_ready_fn ready_;
  void* ctx_;
  int64_t index_;
};

// The accumulators of the watched parameters, held so that they (and their hooks) outlive each
// backward's graph, with the keys that remove the hooks again.
struct GradWatch {
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<uintptr_t> keys;
};

}  // namespace

extern "C" {

// Watches the `n` leaf tensors: `ready(ctx, i)` runs (on the autograd engine's thread) after
// tensor i's gradient was accumulated, until `whale_dist_unwatch_grads`.
int whale_dist_watch_grads(at::Tensor** tensors, int64_t n, whale_grad_ready_fn ready, void* ctx,
                           void** out, char* err, int64_t err_len) {
  return guarded(err, err_len, [&] {
    auto watch = std::make_unique<GradWatch>();
    for (int64_t i = 0; i < n; ++i) {
      auto acc = torch::autograd::impl::grad_accumulator(*tensors[i]);
      TORCH_CHECK(acc != nullptr, "tensor ", i, " is not a leaf that requires grad");
      watch->keys.push_back(acc->add_post_hook(std::make_unique<GradReady>(ready, ctx, i)));
      watch->accumulators.push_back(std::move(acc));
    }
    *out = watch.release();
  });
}

void whale_dist_unwatch_grads(void* watch) {
  std::unique_ptr<GradWatch> w(static_cast<GradWatch*>(watch));
  for (size_t i = 0; i < w->accumulators.size(); ++i) {
    w->accumulators[i]->del_post_hook(w->keys[i]);
  }
}

// Sets the `.grad` of leaf tensor `t` to `grad`, which must match it in dtype, device and shape (as
// assigning `.grad` in Python checks).
int whale_dist_set_grad(at::Tensor* t, at::Tensor* grad, char* err, int64_t err_len) {
  return guarded(err, err_len, [&] {
    TORCH_CHECK(grad->dtype() == t->dtype() && grad->device() == t->device() &&
                    grad->sizes() == t->sizes(),
                "a gradient of ", grad->dtype(), " ", grad->sizes(), " on ", grad->device(),
                " for a tensor of ", t->dtype(), " ", t->sizes(), " on ", t->device());
    t->mutable_grad() = *grad;
  });
}


// A TCPStore client of `host:port`, or its server too when `is_server` (rank 0 hosts it unless
// torchrun's agent does). Keys live under `prefix` when it is not empty (torchrun's agent store
// keeps each restart attempt apart that way). Connecting gives up after `timeout_ms`.
int whale_dist_store_new(const char* host, int port, int is_server, int world_size,
                         const char* prefix, int64_t timeout_ms, void** out, char* err,
                         int64_t err_len) {
  return guarded(err, err_len, [&] {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<std::size_t>(world_size);
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    Store store = c10::make_intrusive<c10d::TCPStore>(host, opts);
    if (prefix != nullptr && prefix[0] != '\0') {
      store = c10::make_intrusive<c10d::PrefixStore>(prefix, store);
    }
    *out = release(std::move(store));
  });
}

// A view of `store` whose keys live under `prefix`: the rendezvous of a sub-group (the ranks of
// one expert-parallel group, say) inside the job's store.
int whale_dist_prefix_store_new(void* store, const char* prefix, void** out, char* err,
                                int64_t err_len) {
  return guarded(err, err_len, [&] {
    Store s = c10::intrusive_ptr<c10d::Store>::reclaim_copy(static_cast<c10d::Store*>(store));
    *out = release(c10::make_intrusive<c10d::PrefixStore>(prefix, s));
  });
}

void whale_dist_store_free(void* store) {
  c10::intrusive_ptr<c10d::Store>::reclaim(static_cast<c10d::Store*>(store));
}

// The Gloo process group of `world_size` ranks meeting through `store`, its sockets bound to
// `bind_host` (empty: the address of this machine's host name, as torch.distributed does); every
// collective it runs gives up after `timeout_ms` (a peer that died or hangs).
int whale_dist_gloo_new(void* store, int rank, int world_size, const char* bind_host,
                        int64_t timeout_ms, void** out, char* err, int64_t err_len) {
  return guarded(err, err_len, [&] {
#ifdef USE_C10D_GLOO
    using Gloo = c10d::ProcessGroupGloo;
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto opts = Gloo::Options::create_default(timeout);
    if (bind_host[0] != '\0') opts->devices = {Gloo::createDeviceForHostname(bind_host)};
    Store s = c10::intrusive_ptr<c10d::Store>::reclaim_copy(static_cast<c10d::Store*>(store));
    Backend pg = c10::make_intrusive<Gloo>(s, rank, world_size, opts);
    *out = release(std::move(pg));
#else
    (void)store, (void)rank, (void)world_size, (void)bind_host, (void)timeout_ms, (void)out;
    throw std::runtime_error(
        "this whale-train was built without gloo's headers (no /usr/include/gloo): run "
        "scripts/setup (it installs libgloo-dev) and rebuild");
#endif
  });
}

// The NCCL process group of `world_size` ranks meeting through `store` (CUDA tensors; each rank
// drives the GPU its tensors are on). NCCL finds its own interfaces, so `bind_host` is unused;
// collectives give up after `timeout_ms`, as with Gloo.
int whale_dist_nccl_new(void* store, int rank, int world_size, const char* bind_host,
                        int64_t timeout_ms, void** out, char* err, int64_t err_len) {
  return guarded(err, err_len, [&] {
    (void)bind_host;
#ifdef USE_C10D_NCCL
    using Nccl = c10d::ProcessGroupNCCL;
    auto opts = Nccl::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    Store s = c10::intrusive_ptr<c10d::Store>::reclaim_copy(static_cast<c10d::Store*>(store));
    Backend pg = c10::make_intrusive<Nccl>(s, rank, world_size, opts);
    *out = release(std::move(pg));
#else
    (void)store, (void)rank, (void)world_size, (void)timeout_ms, (void)out;
    throw std::runtime_error(
        "this whale-train was built without the CUDA/NCCL headers (site-packages/nvidia/cu13 and "
        "nvidia/nccl beside libtorch), so it has no NCCL process group: run scripts/setup and "
        "rebuild, or train with --device cpu (Gloo)");
#endif
  });
}

void whale_dist_pg_free(void* pg) { c10::intrusive_ptr<c10d::Backend>::reclaim(backend(pg)); }

// Broadcasts `*t` from rank `root` into `*t` of every rank.
int whale_dist_broadcast(void* pg, at::Tensor* t, int root, void** work, char* err,
                         int64_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<at::Tensor> ts{*t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    launched(backend(pg)->broadcast(ts, opts), work);
  });
}

// All-reduces `*t` in place: SUM, or AVG (NCCL only; Gloo has no AVG and Rust divides a SUM).
int whale_dist_all_reduce(void* pg, at::Tensor* t, int avg, void** work, char* err,
                          int64_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<at::Tensor> ts{*t};
    c10d::AllreduceOptions opts;
    opts.reduceOp = avg != 0 ? c10d::ReduceOp::AVG : c10d::ReduceOp::SUM;
    launched(backend(pg)->allreduce(ts, opts), work);
  });
}

// Sums `*input` (world_size equal chunks) over ranks and leaves chunk `rank` in `*output`.
int whale_dist_reduce_scatter(void* pg, at::Tensor* output, at::Tensor* input, void** work,
                              char* err, int64_t err_len) {
  return guarded(err, err_len, [&] {
    launched(backend(pg)->_reduce_scatter_base(*output, *input), work);
  });
}

// Concatenates every rank's `*input` into `*output` (world_size times its size), in rank order.
int whale_dist_all_gather(void* pg, at::Tensor* output, at::Tensor* input, void** work,
                          char* err, int64_t err_len) {
  return guarded(err, err_len, [&] {
    launched(backend(pg)->_allgather_base(*output, *input), work);
  });
}

// Sends rows of `*input` to every rank and receives theirs into `*output`: `in_splits[r]` rows
// (dim 0) go to rank r, in rank order, and `out_splits[r]` rows arrive from rank r.
int whale_dist_all_to_all(void* pg, at::Tensor* output, at::Tensor* input,
                          const int64_t* out_splits, const int64_t* in_splits, int64_t n,
                          void** work, char* err, int64_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<int64_t> out(out_splits, out_splits + n), in(in_splits, in_splits + n);
    launched(backend(pg)->alltoall_base(*output, *input, out, in), work);
  });
}

int whale_dist_barrier(void* pg, void** work, char* err, int64_t err_len) {
  return guarded(err, err_len, [&] { launched(backend(pg)->barrier(), work); });
}

// Waits for `work` to finish, at most `timeout_ms`; an error or the timeout is an error.
int whale_dist_wait(void* work, int64_t timeout_ms, char* err, int64_t err_len) {
  return guarded(err, err_len, [&] {
    if (!static_cast<c10d::Work*>(work)->wait(std::chrono::milliseconds(timeout_ms))) {
      throw std::runtime_error("timed out");
    }
  });
}

// Gives each of the `n` tensors that has no `.grad` a zero one: a parameter that this rank's tokens
// did not reach (an expert) still takes part in the gradient all-reduce when another rank's did.
int whale_dist_zero_missing_grads(at::Tensor** tensors, int64_t n, char* err, int64_t err_len) {
  return guarded(err, err_len, [&] {
    for (int64_t i = 0; i < n; ++i) {
      if (!tensors[i]->grad().defined()) tensors[i]->mutable_grad() = at::zeros_like(*tensors[i]);
    }
  });
}

void whale_dist_work_free(void* work) {
  c10::intrusive_ptr<c10d::Work>::reclaim(static_cast<c10d::Work*>(work));
}
}
