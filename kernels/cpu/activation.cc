// SwiGLU forward and backward.
#include "kernels/activation.h"

#include <cmath>

#include "kernels/cpu/dispatch.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/activation.h"
#endif
#include "runtime/core/profiler.h"

namespace tandem::kernels {

void swiglu_forward(const Tensor& gate_up, Tensor& h) {
  TANDEM_PROFILE_SCOPE("swiglu_forward");
  const int64_t n = gate_up.dim(0), f = gate_up.dim(1) / 2;
  check_shape(h, {n, f}, "swiglu output");
  check_same_dtype({&gate_up, &h}, "swiglu_forward");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&gate_up, &h}, "swiglu_forward").type == DeviceType::kCUDA)
    return cuda::swiglu_forward(gate_up, h);
#endif
  require_cpu({&gate_up, &h}, "swiglu_forward");
  dispatch_float(h.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* in = gate_up.data<T>();
    T* out = h.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T* gate = in + i * 2 * f;
      const T* up = gate + f;
#pragma omp simd
      for (int64_t j = 0; j < f; ++j)
        out[i * f + j] = gate[j] / (T(1) + std::exp(-gate[j])) * up[j];
    }
  });
}

void swiglu_backward(const Tensor& dh, const Tensor& gate_up, Tensor& dgate_up) {
  TANDEM_PROFILE_SCOPE("swiglu_backward");
  const int64_t n = gate_up.dim(0), f = gate_up.dim(1) / 2;
  check_shape(dh, {n, f}, "swiglu output gradient");
  check_shape(dgate_up, {n, 2 * f}, "swiglu input gradient");
  check_same_dtype({&dh, &gate_up, &dgate_up}, "swiglu_backward");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&dh, &gate_up, &dgate_up}, "swiglu_backward").type == DeviceType::kCUDA)
    return cuda::swiglu_backward(dh, gate_up, dgate_up);
#endif
  require_cpu({&dh, &gate_up, &dgate_up}, "swiglu_backward");
  dispatch_float(dh.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* in = gate_up.data<T>();
    const T* g = dh.data<T>();
    T* out = dgate_up.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T* gate = in + i * 2 * f;
      const T* up = gate + f;
      T* dgate = out + i * 2 * f;
      T* dup = dgate + f;
#pragma omp simd
      for (int64_t j = 0; j < f; ++j) {
        const T sig = T(1) / (T(1) + std::exp(-gate[j]));
        const T silu = gate[j] * sig;
        dup[j] = g[i * f + j] * silu;
        dgate[j] = g[i * f + j] * up[j] * sig * (T(1) + gate[j] * (T(1) - sig));
      }
    }
  });
}

}  // namespace tandem::kernels
