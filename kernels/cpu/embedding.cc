// Embedding gather and scatter-add.
#include "kernels/embedding.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/dispatch.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/embedding.h"
#endif
#include "runtime/core/profiler.h"

namespace tandem::kernels {

void embedding_forward(const Tensor& tokens, const Tensor& table, Tensor& out) {
  TANDEM_PROFILE_SCOPE("embedding_forward");
  const int64_t n = tokens.numel(), vocab = table.dim(0), d = table.dim(1);
  check_dtype(tokens, DType::kI32, "embedding tokens");
  check_shape(out, {n, d}, "embedding output");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&tokens, &table, &out}, "embedding_forward").type == DeviceType::kCUDA)
    return cuda::embedding_forward(tokens, table, out);
#endif
  require_cpu({&tokens, &table, &out}, "embedding_forward");
  const int32_t* ids = tokens.data<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    TANDEM_CHECK(ids[i] >= 0 && ids[i] < vocab, "token id ", ids[i], " at position ", i,
                 " is outside the vocabulary [0, ", vocab, ")");
  dispatch_float(table.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* src = table.data<T>();
    T* dst = out.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * d, src + ids[i] * d, d * sizeof(T));
  });
}

void embedding_wgrad(const Tensor& tokens, const Tensor& dout, Tensor& dtable) {
  TANDEM_PROFILE_SCOPE("embedding_wgrad");
  const int64_t n = tokens.numel(), d = dtable.dim(1);
  check_shape(dout, {n, d}, "embedding output gradient");
  check_same_dtype({&dout, &dtable}, "embedding_wgrad");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&tokens, &dout, &dtable}, "embedding_wgrad").type == DeviceType::kCUDA)
    return cuda::embedding_wgrad(tokens, dout, dtable);
#endif
  require_cpu({&tokens, &dout, &dtable}, "embedding_wgrad");
  const int32_t* ids = tokens.data<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    TANDEM_CHECK(ids[i] >= 0 && ids[i] < dtable.dim(0), "token id ", ids[i], " at position ", i,
                 " is outside the vocabulary [0, ", dtable.dim(0), ")");
  dispatch_float(dtable.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* g = dout.data<T>();
    T* dst = dtable.data<T>();
    // Threads own disjoint column ranges, so repeated token ids never race and the summation
    // order is the same for any thread count.
    constexpr int64_t kColumns = 16;
#pragma omp parallel for schedule(static)
    for (int64_t c0 = 0; c0 < d; c0 += kColumns) {
      const int64_t c1 = std::min(d, c0 + kColumns);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t c = c0; c < c1; ++c) dst[ids[i] * d + c] += g[i * d + c];
    }
  });
}

}  // namespace tandem::kernels
