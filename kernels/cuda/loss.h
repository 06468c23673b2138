// The CUDA side of kernels/loss.h: cross-entropy over fp32 device logits with int32 device
// targets, fused with its gradient (which may alias the logits), on the device's compute stream.
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels::cuda {

double cross_entropy(const Tensor& logits, const Tensor& targets, double grad_scale,
                     Tensor* dlogits);

}  // namespace tandem::kernels::cuda
