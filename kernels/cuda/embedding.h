// The CUDA side of kernels/embedding.h on device tensors (int32 tokens, fp32 table), on the
// device's compute stream. The weight gradient adds each column's contributions in token order,
// as the CPU reference does, so both give the same bits.
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels::cuda {

void embedding_forward(const Tensor& tokens, const Tensor& table, Tensor& out);
void embedding_wgrad(const Tensor& tokens, const Tensor& dout, Tensor& dtable);

}  // namespace tandem::kernels::cuda
