// Calls a generic kernel body with the C++ type of a floating-point dtype (fp32 or fp64). fp64 is
// there so gradient checks run the very same kernels in double precision.
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels {

template <class Body>
void dispatch_float(DType dtype, Body&& body) {
  if (dtype == DType::kF32) {
    body(float{});
  } else if (dtype == DType::kF64) {
    body(double{});
  } else {
    TANDEM_FAIL("CPU kernel needs fp32 or fp64, got ", dtype_name(dtype));
  }
}

// Checks that every tensor has the dtype of the first one.
inline void check_same_dtype(std::initializer_list<const Tensor*> tensors, const char* kernel) {
  DType first = (*tensors.begin())->dtype();
  for (const Tensor* t : tensors)
    TANDEM_CHECK(t->dtype() == first, kernel, ": mixed dtypes ", dtype_name(first), " and ",
                 dtype_name(t->dtype()));
}

// The device a kernel entry's tensors are on (the CPU reference or the CUDA kernel runs there);
// tensors on different devices are refused, naming the kernel and both devices.
template <class Tensors>
Device device_of(const Tensors& tensors, const char* kernel) {
  const Device first = (*tensors.begin())->device();
  for (const Tensor* t : tensors)
    TANDEM_CHECK(t->device() == first, kernel, ": tensors on ", first.to_string(), " and ",
                 t->device().to_string(), "; move them to one device first");
  return first;
}
inline Device device_of(std::initializer_list<const Tensor*> tensors, const char* kernel) {
  return device_of<std::initializer_list<const Tensor*>>(tensors, kernel);
}

// For entries that have only the CPU reference so far: a tensor elsewhere is refused by name.
inline void require_cpu(std::initializer_list<const Tensor*> tensors, const char* kernel) {
  const Device device = device_of(tensors, kernel);
  TANDEM_CHECK(device.type == DeviceType::kCPU, kernel, " has no kernel for ", device.to_string(),
               " yet; its tensors must be on the CPU");
}

}  // namespace tandem::kernels
