// Linear forward, dgrad and wgrad as OpenBLAS GEMMs (cuBLASLt for CUDA tensors).
#include "kernels/linear.h"

#include "kernels/cpu/blas.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/elementwise.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/linear.h"
#endif
#include "runtime/core/profiler.h"

namespace tandem::kernels {

namespace {

// True for bf16 operands with an fp32 result; otherwise every dtype must be the same.
bool bf16_operands(const Tensor& a, const Tensor& b, const Tensor& out, const char* kernel) {
  if (a.dtype() != DType::kBF16 && b.dtype() != DType::kBF16) {
    check_same_dtype({&a, &b, &out}, kernel);
    return false;
  }
  TANDEM_CHECK(a.dtype() == DType::kBF16 && b.dtype() == DType::kBF16 && out.dtype() == DType::kF32,
               kernel, ": bf16 operands need both operands bf16 and an fp32 result, got ",
               dtype_name(a.dtype()), " and ", dtype_name(b.dtype()), " into ",
               dtype_name(out.dtype()));
  return true;
}

// The fp32 copy of a bf16 operand that sgemm reads (widening bf16 is exact).
Tensor widened(const Tensor& t) {
  Tensor wide = Tensor::empty(t.shape(), DType::kF32);
  convert(t, wide);
  return wide;
}

}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate) {
  TANDEM_PROFILE_SCOPE("linear_forward");
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
  check_shape(w, {out, in}, "linear_forward weight");
  check_shape(y, {n, out}, "linear_forward output");
  const bool bf16 = bf16_operands(x, w, y, "linear_forward");
  if (n == 0) return;
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&x, &w, &y}, "linear_forward").type == DeviceType::kCUDA)
    return cuda::linear_forward(x, w, y, accumulate);
#endif
  require_cpu({&x, &w, &y}, "linear_forward");
  if (bf16) return linear_forward(widened(x), widened(w), y, accumulate);
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
  const bool bf16 = bf16_operands(dy, w, dx, "linear_dgrad");
  if (n == 0) return;
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&dy, &w, &dx}, "linear_dgrad").type == DeviceType::kCUDA)
    return cuda::linear_dgrad(dy, w, dx, accumulate);
#endif
  require_cpu({&dy, &w, &dx}, "linear_dgrad");
  if (bf16) return linear_dgrad(widened(dy), widened(w), dx, accumulate);
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
  const bool bf16 = bf16_operands(dy, x, dw, "linear_wgrad");
  if (n == 0) return;
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&dy, &x, &dw}, "linear_wgrad").type == DeviceType::kCUDA)
    return cuda::linear_wgrad(dy, x, dw);
#endif
  require_cpu({&dy, &x, &dw}, "linear_wgrad");
  if (bf16) return linear_wgrad(widened(dy), widened(x), dw);
  dispatch_float(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    gemm(true, false, out, in, n, T(1), dy.data<T>(), out, x.data<T>(), in, T(1), dw.data<T>(), in);
  });
}

}  // namespace tandem::kernels
