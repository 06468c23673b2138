// Causal softmax attention core, one (sequence, head) pair per task.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/dispatch.h"

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

template <class T>
T dot(const T* a, const T* b, int64_t n) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

template <class T>
void add_scaled(T* y, const T* x, T alpha, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}
}  // namespace

void attention_forward(const Tensor& qkv, int64_t seq_len, int64_t n_heads, Tensor& out,
                       Tensor& probs) {
  const auto s = attention_shape(qkv, seq_len, n_heads);
  check_shape(out, {s.batch * s.seq_len, s.d}, "attention output");
  check_shape(probs, {s.batch, s.heads, s.seq_len, s.seq_len}, "attention probabilities");
  check_same_dtype({&qkv, &out, &probs}, "attention_forward");
  dispatch_float(qkv.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* base = qkv.data<T>();
    T* o = out.data<T>();
    T* p_all = probs.data<T>();
    const T scale = T(1) / std::sqrt(T(s.head_dim));
    const int64_t T_ = s.seq_len, hd = s.head_dim, W = s.width;
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.heads; ++h) {
        const T* q = base + b * T_ * W + h * hd;
        const T* k = q + s.d;
        const T* v = q + 2 * s.d;
        T* p_head = p_all + (b * s.heads + h) * T_ * T_;
        for (int64_t i = 0; i < T_; ++i) {
          T* p = p_head + i * T_;
          T max_score = -INFINITY;
          for (int64_t j = 0; j <= i; ++j) {
            p[j] = dot(q + i * W, k + j * W, hd) * scale;
            max_score = std::max(max_score, p[j]);
          }
          T sum = 0;
          for (int64_t j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - max_score));
          const T inv = T(1) / sum;
          T* oi = o + (b * T_ + i) * s.d + h * hd;
          std::fill(oi, oi + hd, T(0));
          for (int64_t j = 0; j <= i; ++j) {
            p[j] *= inv;
            add_scaled(oi, v + j * W, p[j], hd);
          }
          std::fill(p + i + 1, p + T_, T(0));
        }
      }
  });
}

void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& probs,
                        int64_t seq_len, int64_t n_heads, Tensor& dqkv) {
  const auto s = attention_shape(qkv, seq_len, n_heads);
  check_shape(dout, {s.batch * s.seq_len, s.d}, "attention output gradient");
  check_shape(dqkv, qkv.shape(), "attention qkv gradient");
  check_same_dtype({&dout, &qkv, &probs, &dqkv}, "attention_backward");
  dispatch_float(qkv.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* base = qkv.data<T>();
    const T* go = dout.data<T>();
    const T* p_all = probs.data<T>();
    T* dbase = dqkv.data<T>();
    const T scale = T(1) / std::sqrt(T(s.head_dim));
    const int64_t T_ = s.seq_len, hd = s.head_dim, W = s.width;
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.heads; ++h) {
        const T* q = base + b * T_ * W + h * hd;
        const T* k = q + s.d;
        const T* v = q + 2 * s.d;
        T* dq = dbase + b * T_ * W + h * hd;
        T* dk = dq + s.d;
        T* dv = dq + 2 * s.d;
        for (int64_t i = 0; i < T_; ++i)
          for (T* part : {dq, dk, dv}) std::fill(part + i * W, part + i * W + hd, T(0));
        const T* p_head = p_all + (b * s.heads + h) * T_ * T_;
        std::vector<T> dp(T_);
        for (int64_t i = 0; i < T_; ++i) {
          const T* p = p_head + i * T_;
          const T* goi = go + (b * T_ + i) * s.d + h * hd;
          T row_dot = 0;
          for (int64_t j = 0; j <= i; ++j) {
            dp[j] = dot(goi, v + j * W, hd);
            row_dot += p[j] * dp[j];
            add_scaled(dv + j * W, goi, p[j], hd);
          }
          for (int64_t j = 0; j <= i; ++j) {
            const T ds = p[j] * (dp[j] - row_dot) * scale;
            add_scaled(dq + i * W, k + j * W, ds, hd);
            add_scaled(dk + j * W, q + i * W, ds, hd);
          }
        }
      }
  });
}

}  // namespace tandem::kernels
