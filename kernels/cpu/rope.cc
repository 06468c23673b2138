// Rotary position embedding, applied in place to the q and k thirds of a fused qkv activation.
#include "kernels/rope.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/dispatch.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/rope.h"
#endif
#include "runtime/core/profiler.h"

namespace tandem::kernels {

RopeTable rope_table(int64_t seq_len, int64_t head_dim, double theta, bool inverse) {
  const int64_t half = head_dim / 2;
  RopeTable table{std::vector<double>(seq_len * half), std::vector<double>(seq_len * half)};
  for (int64_t p = 0; p < seq_len; ++p)
    for (int64_t i = 0; i < half; ++i) {
      double angle = p * std::pow(theta, -2.0 * i / head_dim);
      table.cos[p * half + i] = std::cos(angle);
      table.sin[p * half + i] = inverse ? -std::sin(angle) : std::sin(angle);
    }
  return table;
}

void rope_apply(Tensor& qkv, int64_t seq_len, int64_t n_heads, double theta, bool inverse) {
  TANDEM_PROFILE_SCOPE("rope_apply");
  const int64_t rows = qkv.dim(0), width = qkv.dim(1), d = width / 3;
  TANDEM_CHECK(width == 3 * d && d % n_heads == 0 && (d / n_heads) % 2 == 0, "rope: qkv width ",
               width, " does not split into 3 x ", n_heads, " heads of even size");
  TANDEM_CHECK(rows % seq_len == 0, "rope: ", rows, " rows are not whole sequences of ", seq_len);
  const int64_t head_dim = d / n_heads, half = head_dim / 2;
  const RopeTable table = rope_table(seq_len, head_dim, theta, inverse);
#ifdef TANDEM_HAVE_CUDA
  if (qkv.device().type == DeviceType::kCUDA) return cuda::rope_apply(qkv, seq_len, n_heads, table);
#endif
  require_cpu({&qkv}, "rope_apply");
  const std::vector<double>&cos_table = table.cos, &sin_table = table.sin;
  dispatch_float(qkv.dtype(), [&](auto zero) {
    using T = decltype(zero);
    T* data = qkv.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t p = r % seq_len;
      const double* cs = cos_table.data() + p * half;
      const double* sn = sin_table.data() + p * half;
      for (int64_t part = 0; part < 2; ++part)  // q, then k
        for (int64_t h = 0; h < n_heads; ++h) {
          T* v = data + r * width + part * d + h * head_dim;
          for (int64_t i = 0; i < half; ++i) {
            const T c = static_cast<T>(cs[i]), s = static_cast<T>(sn[i]);
            const T a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * c - b * s;
            v[2 * i + 1] = a * s + b * c;
          }
        }
    }
  });
}

}  // namespace tandem::kernels
