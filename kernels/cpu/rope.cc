// Rotary position embedding, applied in place to the q and k thirds of a fused qkv activation.
#include "kernels/rope.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/dispatch.h"
#include "runtime/core/profiler.h"

namespace tandem::kernels {

void rope_apply(Tensor& qkv, int64_t seq_len, int64_t n_heads, double theta, bool inverse) {
  require_cpu({&qkv}, "rope_apply");
  TANDEM_PROFILE_SCOPE("rope_apply");
  const int64_t rows = qkv.dim(0), width = qkv.dim(1), d = width / 3;
  TANDEM_CHECK(width == 3 * d && d % n_heads == 0 && (d / n_heads) % 2 == 0, "rope: qkv width ",
               width, " does not split into 3 x ", n_heads, " heads of even size");
  TANDEM_CHECK(rows % seq_len == 0, "rope: ", rows, " rows are not whole sequences of ", seq_len);
  const int64_t head_dim = d / n_heads, half = head_dim / 2;
  // The table is computed in double so fp32 and fp64 runs rotate by the same angles.
  std::vector<double> cos_table(seq_len * half), sin_table(seq_len * half);
  for (int64_t p = 0; p < seq_len; ++p)
    for (int64_t i = 0; i < half; ++i) {
      double angle = p * std::pow(theta, -2.0 * i / head_dim);
      cos_table[p * half + i] = std::cos(angle);
      sin_table[p * half + i] = inverse ? -std::sin(angle) : std::sin(angle);
    }
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
