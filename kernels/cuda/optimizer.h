// The CUDA side of kernels/optimizer.h's AdamW update, on fp32 device tensors, on the device's
// compute stream: the CPU reference's formula, element by element.
#pragma once

#include "kernels/optimizer.h"

namespace tandem::kernels::cuda {

void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWHyper& h);

}  // namespace tandem::kernels::cuda
