// The two CPU kernels of the fused output head in `cross_entropy.rs`, per chunk of tokens.
//
// Logits: with a small model dimension the logits GEMM has a short reduction (K = d) and MKL runs
// it far below its peak on a whole `[chunk, V]` output, even with its own threads. Cut into
// column blocks of the vocabulary, one single-threaded GEMM per block on libtorch's threads, it
// takes ~40% less time (11.1 → 7.0 ms per tiny step: d = 64, V = 8192, 2 cores); the gradient
// GEMMs (K = V and K = chunk) gain nothing from blocking.
//
// Softmax cross-entropy: written with libtorch ops the step takes a softmax into a new tensor, two
// max reductions (for the log-sum-exp), gathers, a log and a scatter for the one-hot, then scales
// the GEMM operands: eight passes over a tensor the size of the chunk and a dozen op dispatches.
// Here each row is read three times while it sits in L1 (max; exp and sum; scale), by libtorch's
// own thread pool and its AVX2 exponential (Sleef, the one its softmax uses).
#include "cpp_error.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/mm.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

extern "C" __attribute__((target("avx2,fma"))) __m256 Sleef_expf8_u10avx2(__m256);

namespace {

// Row `x` of `v` logits → `scale · (softmax(x) − onehot(t))` (when `grad`); returns
// `scale · (logsumexp(x) − x[t])`.
float row_scalar(float* x, int64_t v, int64_t t, float scale, bool grad) {
  const float target = x[t];
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < v; ++j) m = std::fmax(m, x[j]);
  float s = 0.0f;
  for (int64_t j = 0; j < v; ++j) {
    x[j] = std::exp(x[j] - m);
    s += x[j];
  }
  if (grad) {
    const float k = scale / s;
    for (int64_t j = 0; j < v; ++j) x[j] *= k;
    x[t] -= scale;
  }
  return scale * (m + std::log(s) - target);
}

__attribute__((target("avx2,fma"))) float hmax(__m256 a) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

__attribute__((target("avx2,fma"))) float hsum(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// `row_scalar` eight lanes at a time. Two accumulators per pass hide the latency of max/add.
__attribute__((target("avx2,fma"))) float row_avx2(float* x, int64_t v, int64_t t, float scale,
                                                   bool grad) {
  const float target = x[t];
  const int64_t body = v - v % 16;
  __m256 m0 = _mm256_set1_ps(-std::numeric_limits<float>::infinity()), m1 = m0;
  for (int64_t j = 0; j < body; j += 16) {
    m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + j));
    m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + j + 8));
  }
  float m = hmax(_mm256_max_ps(m0, m1));
  for (int64_t j = body; j < v; ++j) m = std::fmax(m, x[j]);
  // A NaN logit is skipped by max_ps; it still turns the sum, hence the loss, into NaN.
  const __m256 vm = _mm256_set1_ps(m);
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  for (int64_t j = 0; j < body; j += 16) {
    const __m256 e0 = Sleef_expf8_u10avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm));
    const __m256 e1 = Sleef_expf8_u10avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j + 8), vm));
    _mm256_storeu_ps(x + j, e0);
    _mm256_storeu_ps(x + j + 8, e1);
    s0 = _mm256_add_ps(s0, e0);
    s1 = _mm256_add_ps(s1, e1);
  }
  float s = hsum(_mm256_add_ps(s0, s1));
  for (int64_t j = body; j < v; ++j) {
    x[j] = std::exp(x[j] - m);
    s += x[j];
  }
  if (grad) {
    const float k = scale / s;
    const __m256 vk = _mm256_set1_ps(k);
    for (int64_t j = 0; j < body; j += 8) {
      _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), vk));
    }
    for (int64_t j = body; j < v; ++j) x[j] *= k;
    x[t] -= scale;
  }
  return scale * (m + std::log(s) - target);
}

}  // namespace

extern "C" {
// `out[:, blk] = hidden · weight[blk]ᵀ` for column blocks of `block` vocabulary rows (`out`
// [n, V], `hidden` [n, d], `weight` [V, d], FP32 CPU). Returns 0, or non-zero with a message in
// `err`.
int whale_head_logits(at::Tensor* out, at::Tensor* hidden, at::Tensor* weight, int64_t block,
                      char* err, int64_t err_len) {
  try {
    const int64_t v = weight->size(0);
    TORCH_CHECK(block > 0 && out->dim() == 2 && out->size(1) == v,
                "logits must be [tokens, vocabulary] and the block positive");
    // Each block's GEMM runs on one thread: MKL called inside an OpenMP region is sequential.
    at::parallel_for(0, (v + block - 1) / block, 1, [&](int64_t first, int64_t last) {
      at::NoGradGuard no_grad;  // grad mode is thread-local; the pool's threads have their own.
      for (int64_t b = first; b < last; ++b) {
        const int64_t start = b * block, len = std::min(block, v - start);
        at::Tensor cols = out->narrow(1, start, len);
        at::mm_out(cols, *hidden, weight->narrow(0, start, len).t());
      }
    });
    return 0;
  } catch (const std::exception& e) {
    write_err(e.what(), err, err_len);
    return 1;
  }
}

// `logits` [n, V] (FP32, contiguous, CPU), `target` [n] int64 in [0, V), `scale` [n] FP32,
// `loss` [n] FP32 (written): loss[i] = scale[i]·(logsumexp(logits[i]) − logits[i][target[i]]),
// and when `grad` is non-zero logits[i] becomes scale[i]·(softmax(logits[i]) − onehot(target[i])).
// Returns 0, or non-zero with a message in `err`.
int whale_softmax_xent_(at::Tensor* logits, at::Tensor* target, at::Tensor* scale,
                        at::Tensor* loss, int grad, char* err, int64_t err_len) {
  try {
    const at::Tensor& x = *logits;
    TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == at::kFloat && x.is_cpu(),
                "logits must be a contiguous 2-D FP32 CPU tensor");
    const int64_t n = x.size(0), v = x.size(1);
    for (const at::Tensor* t : {target, scale, loss}) {
      TORCH_CHECK(t->dim() == 1 && t->size(0) == n && t->is_contiguous() && t->is_cpu(),
                  "target, scale and loss must be contiguous CPU vectors of the logits' rows");
    }
    TORCH_CHECK(target->scalar_type() == at::kLong && scale->scalar_type() == at::kFloat &&
                    loss->scalar_type() == at::kFloat,
                "target must be int64, scale and loss FP32");
    float* xs = x.data_ptr<float>();
    const int64_t* ts = target->data_ptr<int64_t>();
    const float* ss = scale->data_ptr<float>();
    float* ls = loss->data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      TORCH_CHECK(ts[i] >= 0 && ts[i] < v, "target ", ts[i], " of row ", i,
                  " is outside the vocabulary of ", v);
    }
    static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        float* row = xs + i * v;
        ls[i] = avx2 ? row_avx2(row, v, ts[i], ss[i], grad != 0)
                     : row_scalar(row, v, ts[i], ss[i], grad != 0);
      }
    });
    return 0;
  } catch (const std::exception& e) {
    write_err(e.what(), err, err_len);
    return 1;
  }
}
}
