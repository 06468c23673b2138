// RMSNorm forward and its split backward.
#include "kernels/norm.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/dispatch.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/norm.h"
#endif
#include "runtime/core/profiler.h"

namespace tandem::kernels {

void rmsnorm_forward(const Tensor& x, const Tensor& g, double eps, Tensor& y, Tensor& rstd) {
  TANDEM_PROFILE_SCOPE("rmsnorm_forward");
  const int64_t n = x.dim(0), d = x.dim(1);
  check_shape(g, {d}, "rmsnorm weight");
  check_shape(y, {n, d}, "rmsnorm output");
  check_shape(rstd, {n}, "rmsnorm rstd");
  check_same_dtype({&x, &g, &y, &rstd}, "rmsnorm_forward");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&x, &g, &y, &rstd}, "rmsnorm_forward").type == DeviceType::kCUDA)
    return cuda::rmsnorm_forward(x, g, eps, y, rstd);
#endif
  require_cpu({&x, &g, &y, &rstd}, "rmsnorm_forward");
  dispatch_float(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* xs = x.data<T>();
    const T* gs = g.data<T>();
    T* ys = y.data<T>();
    T* rs = rstd.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T* row = xs + i * d;
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < d; ++j) sum += row[j] * row[j];
      const T r = T(1) / std::sqrt(sum / T(d) + T(eps));
      rs[i] = r;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) ys[i * d + j] = row[j] * r * gs[j];
    }
  });
}

void rmsnorm_dgrad(const Tensor& dy, const Tensor& x, const Tensor& g, const Tensor& rstd,
                   Tensor& dx) {
  TANDEM_PROFILE_SCOPE("rmsnorm_dgrad");
  const int64_t n = x.dim(0), d = x.dim(1);
  check_shape(dy, {n, d}, "rmsnorm output gradient");
  check_shape(dx, {n, d}, "rmsnorm input gradient");
  check_shape(g, {d}, "rmsnorm weight");
  check_shape(rstd, {n}, "rmsnorm rstd");
  check_same_dtype({&dy, &x, &g, &rstd, &dx}, "rmsnorm_dgrad");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&dy, &x, &g, &rstd, &dx}, "rmsnorm_dgrad").type == DeviceType::kCUDA)
    return cuda::rmsnorm_dgrad(dy, x, g, rstd, dx);
#endif
  require_cpu({&dy, &x, &g, &rstd, &dx}, "rmsnorm_dgrad");
  dispatch_float(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* dys = dy.data<T>();
    const T* xs = x.data<T>();
    const T* gs = g.data<T>();
    const T* rs = rstd.data<T>();
    T* dxs = dx.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T* xr = xs + i * d;
      const T* dyr = dys + i * d;
      T dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < d; ++j) dot += gs[j] * dyr[j] * xr[j];
      const T r = rs[i];
      const T c = r * r * r * dot / T(d);
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) dxs[i * d + j] = r * gs[j] * dyr[j] - xr[j] * c;
    }
  });
}

void rmsnorm_wgrad(const Tensor& dy, const Tensor& x, const Tensor& rstd, Tensor& dg) {
  TANDEM_PROFILE_SCOPE("rmsnorm_wgrad");
  const int64_t n = x.dim(0), d = x.dim(1);
  check_shape(dg, {d}, "rmsnorm weight gradient");
  check_shape(dy, {n, d}, "rmsnorm output gradient");
  check_shape(rstd, {n}, "rmsnorm rstd");
  check_same_dtype({&dy, &x, &rstd, &dg}, "rmsnorm_wgrad");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&dy, &x, &rstd, &dg}, "rmsnorm_wgrad").type == DeviceType::kCUDA)
    return cuda::rmsnorm_wgrad(dy, x, rstd, dg);
#endif
  require_cpu({&dy, &x, &rstd, &dg}, "rmsnorm_wgrad");
  dispatch_float(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* dys = dy.data<T>();
    const T* xs = x.data<T>();
    const T* rs = rstd.data<T>();
    T* dgs = dg.data<T>();
    // Column blocks per thread: deterministic for any thread count, rows read contiguously.
    constexpr int64_t kColumns = 16;
#pragma omp parallel for schedule(static)
    for (int64_t c0 = 0; c0 < d; c0 += kColumns) {
      const int64_t c1 = std::min(d, c0 + kColumns);
      T acc[kColumns] = {};
      for (int64_t i = 0; i < n; ++i)
        for (int64_t c = c0; c < c1; ++c) acc[c - c0] += dys[i * d + c] * xs[i * d + c] * rs[i];
      for (int64_t c = c0; c < c1; ++c) dgs[c] += acc[c - c0];
    }
  });
}

}  // namespace tandem::kernels
