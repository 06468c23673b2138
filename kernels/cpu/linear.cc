// Linear forward, dgrad and wgrad as OpenBLAS GEMMs (cuBLASLt for CUDA tensors).
#include "kernels/linear.h"

#include "kernels/cpu/blas.h"
#include "kernels/cpu/dispatch.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/linear.h"
#endif
#include "runtime/core/profiler.h"

namespace tandem::kernels {

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate) {
  TANDEM_PROFILE_SCOPE("linear_forward");
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
  check_shape(w, {out, in}, "linear_forward weight");
  check_shape(y, {n, out}, "linear_forward output");
  check_same_dtype({&x, &w, &y}, "linear_forward");
  if (n == 0) return;
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&x, &w, &y}, "linear_forward").type == DeviceType::kCUDA)
    return cuda::linear_forward(x, w, y, accumulate);
#endif
  require_cpu({&x, &w, &y}, "linear_forward");
  dispatch_float(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    gemm(false, true, n, out, in, T(1), x.data<T>(), in, w.data<T>(), in, T(accumulate ? 1 : 0),
         y.data<T>(), out);
  });
}

void linear_dgrad(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate) {
  TANDEM_PROFILE_SCOPE("linear_dgrad");
  const int64_t n = dy.dim(0), out = w.dim(0), in = w.dim(1);
  check_shape(dy, {n, out}, "linear_dgrad output gradient");
  check_shape(dx, {n, in}, "linear_dgrad input gradient");
  check_same_dtype({&dy, &w, &dx}, "linear_dgrad");
  if (n == 0) return;
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&dy, &w, &dx}, "linear_dgrad").type == DeviceType::kCUDA)
    return cuda::linear_dgrad(dy, w, dx, accumulate);
#endif
  require_cpu({&dy, &w, &dx}, "linear_dgrad");
  dispatch_float(dy.dtype(), [&](auto zero) {
    using T = decltype(zero);
    gemm(false, false, n, in, out, T(1), dy.data<T>(), out, w.data<T>(), in, T(accumulate ? 1 : 0),
         dx.data<T>(), in);
  });
}

void linear_wgrad(const Tensor& dy, const Tensor& x, Tensor& dw) {
  TANDEM_PROFILE_SCOPE("linear_wgrad");
  const int64_t n = x.dim(0), in = x.dim(1), out = dy.dim(1);
  check_shape(dy, {n, out}, "linear_wgrad output gradient");
  check_shape(dw, {out, in}, "linear_wgrad weight gradient");
  check_same_dtype({&dy, &x, &dw}, "linear_wgrad");
  if (n == 0) return;
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&dy, &x, &dw}, "linear_wgrad").type == DeviceType::kCUDA)
    return cuda::linear_wgrad(dy, x, dw);
#endif
  require_cpu({&dy, &x, &dw}, "linear_wgrad");
  dispatch_float(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    gemm(true, false, out, in, n, T(1), dy.data<T>(), out, x.data<T>(), in, T(1), dw.data<T>(), in);
  });
}

}  // namespace tandem::kernels
