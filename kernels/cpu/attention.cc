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
#include "kernels/cuda/fused_attention.h"
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

// One (sequence, head): S = QKᵀ·scale into p (T×T), then row i's softmax over keys j ≤ i with
// zeros above the diagonal; lse[i] = log Σ_j≤i exp(S_ij) when lse is given.
template <class T>
void causal_softmax(const T* q, const T* k, int64_t seq_len, int64_t head_dim, int64_t width,
                    T scale, T* p, T* lse) {
  // The GEMM computes the full T×T square (the masked half is wasted work), which still beats a
  // hand-written triangular loop by using BLAS's register tiling.
  gemm(false, true, seq_len, seq_len, head_dim, scale, q, width, k, width, T(0), p, seq_len);
  for (int64_t i = 0; i < seq_len; ++i) {
    T* row = p + i * seq_len;
    const T max_score = *std::max_element(row, row + i + 1);
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j <= i; ++j) sum += (row[j] = std::exp(row[j] - max_score));
    const T inv = T(1) / sum;
    for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
    std::fill(row + i + 1, row + seq_len, T(0));  // causal mask
    if (lse) lse[i] = max_score + std::log(sum);
  }
}

// P recomputed from the scores and each row's log-sum-exp: P_ij = exp(S_ij − lse_i), j ≤ i.
template <class T>
void causal_probs_from_lse(const T* q, const T* k, const T* lse, int64_t seq_len, int64_t head_dim,
                           int64_t width, T scale, T* p) {
  gemm(false, true, seq_len, seq_len, head_dim, scale, q, width, k, width, T(0), p, seq_len);
  for (int64_t i = 0; i < seq_len; ++i) {
    T* row = p + i * seq_len;
    for (int64_t j = 0; j <= i; ++j) row[j] = std::exp(row[j] - lse[i]);
    std::fill(row + i + 1, row + seq_len, T(0));
  }
}

// One (sequence, head)'s gradients from its probabilities p, with ds a T×T scratch.
template <class T>
void backward_from_probs(const T* p, const T* q, const T* k, const T* v, const T* g,
                         int64_t seq_len, int64_t head_dim, int64_t width, int64_t d, T scale,
                         T* ds, T* dq, T* dk, T* dv) {
  const int64_t n = seq_len;
  gemm(true, false, n, head_dim, n, T(1), p, n, g, d, T(0), dv, width);  // dV = PᵀdO
  gemm(false, true, n, n, head_dim, T(1), g, d, v, width, T(0), ds, n);  // dP = dO·Vᵀ
  for (int64_t i = 0; i < n; ++i) {  // dS = P ⊙ (dP − Σ_j P·dP) / √hd
    const T* pi = p + i * n;
    T* di = ds + i * n;
    T row_dot = 0;
#pragma omp simd reduction(+ : row_dot)
    for (int64_t j = 0; j <= i; ++j) row_dot += pi[j] * di[j];
    for (int64_t j = 0; j <= i; ++j) di[j] = pi[j] * (di[j] - row_dot) * scale;
    std::fill(di + i + 1, di + n, T(0));
  }
  gemm(false, false, n, head_dim, n, T(1), ds, n, k, width, T(0), dq, width);  // dQ = dS·K
  gemm(true, false, n, head_dim, n, T(1), ds, n, q, width, T(0), dk, width);   // dK = dSᵀ·Q
}

// Per-thread T×T scratch, allocated before a parallel region (an allocation failure inside it
// could not be reported).
template <class T>
std::vector<T> square_per_thread(int64_t seq_len) {
  return std::vector<T>(static_cast<size_t>(omp_get_max_threads()) * seq_len * seq_len);
}

// Both forms' CPU forward: the probabilities into *probs (kept form) or a per-thread scratch
// (fused form, probs null), and each row's log-sum-exp into *lse when given.
void forward_on_cpu(const Tensor& qkv, const AttentionShape& s, Tensor& out, Tensor* probs,
                    Tensor* lse) {
  dispatch_float(qkv.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* base = qkv.data<T>();
    T* o = out.data<T>();
    const T scale = T(1) / std::sqrt(T(s.head_dim));
    const int64_t T_ = s.seq_len, hd = s.head_dim, W = s.width;
    std::vector<T> scratch = probs ? std::vector<T>() : square_per_thread<T>(T_);
    // One (sequence, head) per task; inside a parallel region OpenBLAS runs each GEMM on the
    // calling thread.
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.heads; ++h) {
        const T* q = base + b * T_ * W + h * hd;
        T* p = probs ? probs->data<T>() + (b * s.heads + h) * T_ * T_
                     : scratch.data() + static_cast<size_t>(omp_get_thread_num()) * T_ * T_;
        causal_softmax(q, q + s.d, T_, hd, W, scale, p,
                       lse ? lse->data<T>() + (b * s.heads + h) * T_ : static_cast<T*>(nullptr));
        gemm(false, false, T_, hd, T_, T(1), p, T_, q + 2 * s.d, W, T(0), o + b * T_ * s.d + h * hd,
             s.d);
      }
  });
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
  forward_on_cpu(qkv, s, out, &probs, nullptr);
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
    std::vector<T> scratch = square_per_thread<T>(T_);
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.heads; ++h) {
        const T* q = base + b * T_ * W + h * hd;
        T* dq = dbase + b * T_ * W + h * hd;
        T* ds = scratch.data() + static_cast<size_t>(omp_get_thread_num()) * T_ * T_;
        backward_from_probs(p_all + (b * s.heads + h) * T_ * T_, q, q + s.d, q + 2 * s.d,
                            go + b * T_ * s.d + h * hd, T_, hd, W, s.d, scale, ds, dq, dq + s.d,
                            dq + 2 * s.d);
      }
  });
}

void fused_attention_forward(const Tensor& qkv, int64_t seq_len, int64_t n_heads, Tensor& out,
                             Tensor& lse) {
  TANDEM_PROFILE_SCOPE("fused_attention_forward");
  const auto s = attention_shape(qkv, seq_len, n_heads);
  check_shape(out, {s.batch * s.seq_len, s.d}, "attention output");
  check_shape(lse, {s.batch, s.heads, s.seq_len}, "attention log-sum-exp");
  check_same_dtype({&qkv, &out, &lse}, "fused_attention_forward");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&qkv, &out, &lse}, "fused_attention_forward").type == DeviceType::kCUDA)
    return cuda::fused_attention_forward(qkv, seq_len, n_heads, out, lse);
#endif
  require_cpu({&qkv, &out, &lse}, "fused_attention_forward");
  forward_on_cpu(qkv, s, out, nullptr, &lse);
}

void fused_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                              const Tensor& lse, int64_t seq_len, int64_t n_heads, Tensor& dqkv) {
  TANDEM_PROFILE_SCOPE("fused_attention_backward");
  const auto s = attention_shape(qkv, seq_len, n_heads);
  check_shape(dout, {s.batch * s.seq_len, s.d}, "attention output gradient");
  check_shape(out, {s.batch * s.seq_len, s.d}, "attention output");
  check_shape(dqkv, qkv.shape(), "attention qkv gradient");
  check_shape(lse, {s.batch, s.heads, s.seq_len}, "attention log-sum-exp");
  check_same_dtype({&dout, &qkv, &out, &lse, &dqkv}, "fused_attention_backward");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&dout, &qkv, &out, &lse, &dqkv}, "fused_attention_backward").type ==
      DeviceType::kCUDA)
    return cuda::fused_attention_backward(dout, qkv, out, lse, seq_len, n_heads, dqkv);
#endif
  require_cpu({&dout, &qkv, &out, &lse, &dqkv}, "fused_attention_backward");
  // The CPU reference recomputes the probabilities and takes the kept-probabilities path from
  // there (the output is for the GPU's dO·O row sums, which equal Σ_j P·dP).
  dispatch_float(qkv.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* base = qkv.data<T>();
    const T* go = dout.data<T>();
    const T* lse_all = lse.data<T>();
    T* dbase = dqkv.data<T>();
    const T scale = T(1) / std::sqrt(T(s.head_dim));
    const int64_t T_ = s.seq_len, hd = s.head_dim, W = s.width;
    std::vector<T> probs = square_per_thread<T>(T_), scratch = square_per_thread<T>(T_);
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.heads; ++h) {
        const T* q = base + b * T_ * W + h * hd;
        T* dq = dbase + b * T_ * W + h * hd;
        const size_t mine = static_cast<size_t>(omp_get_thread_num()) * T_ * T_;
        causal_probs_from_lse(q, q + s.d, lse_all + (b * s.heads + h) * T_, T_, hd, W, scale,
                              probs.data() + mine);
        backward_from_probs(probs.data() + mine, q, q + s.d, q + 2 * s.d,
                            go + b * T_ * s.d + h * hd, T_, hd, W, s.d, scale,
                            scratch.data() + mine, dq, dq + s.d, dq + 2 * s.d);
      }
  });
}

}  // namespace tandem::kernels
