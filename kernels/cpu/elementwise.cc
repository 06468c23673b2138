// Residual adds, scaling and norms over whole tensors.
#include "kernels/elementwise.h"

#include "kernels/cpu/dispatch.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/elementwise.h"
#endif
#include "runtime/core/profiler.h"

namespace tandem::kernels {

void axpy(double alpha, const Tensor& x, Tensor& y) {
  TANDEM_PROFILE_SCOPE("axpy");
  TANDEM_CHECK(x.numel() == y.numel(), "axpy: ", shape_string(x.shape()), " vs ",
               shape_string(y.shape()));
  check_same_dtype({&x, &y}, "axpy");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&x, &y}, "axpy").type == DeviceType::kCUDA) return cuda::axpy(alpha, x, y);
#endif
  require_cpu({&x, &y}, "axpy");
  dispatch_float(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* xs = x.data<T>();
    T* ys = y.data<T>();
    const T a = static_cast<T>(alpha);
    const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) ys[i] += a * xs[i];
  });
}

void scale(Tensor& x, double alpha) {
  TANDEM_PROFILE_SCOPE("scale");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&x}, "scale").type == DeviceType::kCUDA) return cuda::scale(x, alpha);
#endif
  require_cpu({&x}, "scale");
  dispatch_float(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    T* xs = x.data<T>();
    const T a = static_cast<T>(alpha);
    const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) xs[i] *= a;
  });
}

double sum_of_squares(const Tensor& x) {
  TANDEM_PROFILE_SCOPE("sum_of_squares");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&x}, "sum_of_squares").type == DeviceType::kCUDA)
    return cuda::sum_of_squares({&x});
#endif
  require_cpu({&x}, "sum_of_squares");
  double total = 0;
  dispatch_float(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* xs = x.data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static) reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) total += static_cast<double>(xs[i]) * xs[i];
  });
  return total;
}

double sum_of_squares(const std::vector<const Tensor*>& tensors) {
  if (tensors.empty()) return 0;
  [[maybe_unused]] const Device device = device_of(tensors, "sum_of_squares");
#ifdef TANDEM_HAVE_CUDA
  if (device.type == DeviceType::kCUDA) return cuda::sum_of_squares(tensors);
#endif
  double total = 0;
  for (const Tensor* t : tensors) total += sum_of_squares(*t);
  return total;
}

void convert(const Tensor& src, Tensor& dst) {
  TANDEM_PROFILE_SCOPE("convert");
  TANDEM_CHECK(src.numel() == dst.numel(), "convert: ", shape_string(src.shape()), " to ",
               shape_string(dst.shape()));
  const int64_t n = src.numel();
  if (src.dtype() == dst.dtype()) return dst.copy_from(src.reshape(dst.shape()));
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&src, &dst}, "convert").type == DeviceType::kCUDA) return cuda::convert(src, dst);
#endif
  require_cpu({&src, &dst}, "convert");
  if (src.dtype() == DType::kBF16 && dst.dtype() == DType::kF32) {
    const bf16* in = src.data<bf16>();
    float* out = dst.data<float>();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = to_float(in[i]);
  } else if (src.dtype() == DType::kF32 && dst.dtype() == DType::kBF16) {
    const float* in = src.data<float>();
    bf16* out = dst.data<bf16>();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = to_bf16(in[i]);
  } else {
    TANDEM_FAIL("convert from ", dtype_name(src.dtype()), " to ", dtype_name(dst.dtype()),
                " is not supported");
  }
}

}  // namespace tandem::kernels
