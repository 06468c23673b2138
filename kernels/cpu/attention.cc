// Causal softmax attention core, one (sequence, head) pair per task.
#include "kernels/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/dispatch.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/attention.h"
#endif
#include "runtime/core/profiler.h"

namespace tandem::kernels {

namespace {
struct AttentionShape {
  int64_t batch, seq_len, heads, head_dim, d, width;
};

AttentionShape attention_shape(const Tensor& qkv, int64_t seq_len, int64_t n_heads) {
  const int64_t rows = qkv.dim(0), width = qkv.dim(1), d = width / 3;
  TANDEM_CHECK(width == 3 * d && d % n_heads == 0, "attention: qkv width ", width,
               " does not split into 3 x ", n_heads, " heads");
  TANDEM_CHECK(rows % seq_len == 0, "attention: ", rows, " rows are not whole sequences of ",
               seq_len);
  return {rows / seq_len, seq_len, n_heads, d / n_heads, d, width};
}

}  // namespace

void attention_forward(const Tensor& qkv, int64_t seq_len, int64_t n_heads, Tensor& out,
                       Tensor& probs) {
  TANDEM_PROFILE_SCOPE("attention_forward");
  const auto s = attention_shape(qkv, seq_len, n_heads);
  check_shape(out, {s.batch * s.seq_len, s.d}, "attention output");
  check_shape(probs, {s.batch, s.heads, s.seq_len, s.seq_len}, "attention probabilities");
  check_same_dtype({&qkv, &out, &probs}, "attention_forward");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&qkv, &out, &probs}, "attention_forward").type == DeviceType::kCUDA)
    return cuda::attention_forward(qkv, seq_len, n_heads, out, probs);
#endif
  require_cpu({&qkv, &out, &probs}, "attention_forward");
  dispatch_float(qkv.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* base = qkv.data<T>();
    T* o = out.data<T>();
    T* p_all = probs.data<T>();
    const T scale = T(1) / std::sqrt(T(s.head_dim));
    const int64_t T_ = s.seq_len, hd = s.head_dim, W = s.width;
    // One (sequence, head) per task; inside a parallel region OpenBLAS runs each GEMM on the
    // calling thread. The GEMMs compute the full T×T square (the masked half is wasted work),
    // which still beats a hand-written triangular loop by using BLAS's register tiling.
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.heads; ++h) {
        const T* q = base + b * T_ * W + h * hd;
        const T* k = q + s.d;
        const T* v = q + 2 * s.d;
        T* p = p_all + (b * s.heads + h) * T_ * T_;
        gemm(false, true, T_, T_, hd, scale, q, W, k, W, T(0), p, T_);  // S = QKᵀ/√hd
        for (int64_t i = 0; i < T_; ++i) {
          T* row = p + i * T_;
          const T max_score = *std::max_element(row, row + i + 1);
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = 0; j <= i; ++j) sum += (row[j] = std::exp(row[j] - max_score));
          const T inv = T(1) / sum;
          for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
          std::fill(row + i + 1, row + T_, T(0));  // causal mask
        }
        gemm(false, false, T_, hd, T_, T(1), p, T_, v, W, T(0), o + b * T_ * s.d + h * hd, s.d);
      }
  });
}

void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& probs, int64_t seq_len,
                        int64_t n_heads, Tensor& dqkv) {
  TANDEM_PROFILE_SCOPE("attention_backward");
  const auto s = attention_shape(qkv, seq_len, n_heads);
  check_shape(dout, {s.batch * s.seq_len, s.d}, "attention output gradient");
  check_shape(dqkv, qkv.shape(), "attention qkv gradient");
  check_shape(probs, {s.batch, s.heads, s.seq_len, s.seq_len}, "attention probabilities");
  check_same_dtype({&dout, &qkv, &probs, &dqkv}, "attention_backward");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&dout, &qkv, &probs, &dqkv}, "attention_backward").type == DeviceType::kCUDA)
    return cuda::attention_backward(dout, qkv, probs, seq_len, n_heads, dqkv);
#endif
  require_cpu({&dout, &qkv, &probs, &dqkv}, "attention_backward");
  dispatch_float(qkv.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* base = qkv.data<T>();
    const T* go = dout.data<T>();
    const T* p_all = probs.data<T>();
    T* dbase = dqkv.data<T>();
    const T scale = T(1) / std::sqrt(T(s.head_dim));
    const int64_t T_ = s.seq_len, hd = s.head_dim, W = s.width;
    // Scratch for dS, one T×T square per thread, allocated before the parallel region (an
    // allocation failure inside it could not be reported).
    std::vector<T> scratch(static_cast<size_t>(omp_get_max_threads()) * T_ * T_);
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.heads; ++h) {
        const T* q = base + b * T_ * W + h * hd;
        const T* k = q + s.d;
        const T* v = q + 2 * s.d;
        const T* g = go + b * T_ * s.d + h * hd;
        T* dq = dbase + b * T_ * W + h * hd;
        T* dk = dq + s.d;
        T* dv = dq + 2 * s.d;
        const T* p = p_all + (b * s.heads + h) * T_ * T_;
        T* ds = scratch.data() + static_cast<size_t>(omp_get_thread_num()) * T_ * T_;
        gemm(true, false, T_, hd, T_, T(1), p, T_, g, s.d, T(0), dv, W);  // dV = PᵀdO
        gemm(false, true, T_, T_, hd, T(1), g, s.d, v, W, T(0), ds, T_);  // dP = dO·Vᵀ
        for (int64_t i = 0; i < T_; ++i) {  // dS = P ⊙ (dP − Σ_j P·dP) / √hd
          const T* pi = p + i * T_;
          T* di = ds + i * T_;
          T row_dot = 0;
#pragma omp simd reduction(+ : row_dot)
          for (int64_t j = 0; j <= i; ++j) row_dot += pi[j] * di[j];
          for (int64_t j = 0; j <= i; ++j) di[j] = pi[j] * (di[j] - row_dot) * scale;
          std::fill(di + i + 1, di + T_, T(0));
        }
        gemm(false, false, T_, hd, T_, T(1), ds, T_, k, W, T(0), dq, W);  // dQ = dS·K
        gemm(true, false, T_, hd, T_, T(1), ds, T_, q, W, T(0), dk, W);   // dK = dSᵀ·Q
      }
  });
}

}  // namespace tandem::kernels
