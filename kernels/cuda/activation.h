// The CUDA side of kernels/activation.h: SwiGLU forward and backward on fp32 device tensors, on
// the device's compute stream; the same formulas as the CPU reference (expf may differ from the
// host's in the last bit).
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels::cuda {

void swiglu_forward(const Tensor& gate_up, Tensor& h);
void swiglu_backward(const Tensor& dh, const Tensor& gate_up, Tensor& dgate_up);

}  // namespace tandem::kernels::cuda
