// Checks at the CUDA kernels' entries: what the CPU reference takes in fp64 (for gradient
// checks) the CUDA kernels take in fp32 only.
#pragma once

#include <initializer_list>

#include "runtime/core/tensor.h"

namespace tandem::kernels::cuda {

inline void require_fp32(std::initializer_list<const Tensor*> tensors, const char* kernel) {
  for (const Tensor* t : tensors)
    TANDEM_CHECK(t->dtype() == DType::kF32, kernel, " on CUDA takes fp32, got ",
                 dtype_name(t->dtype()));
}

}  // namespace tandem::kernels::cuda
