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

}  // namespace tandem::kernels
