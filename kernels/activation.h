// SwiGLU: h = silu(gate) ⊙ up, where the fused input holds [gate | up] per row.
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels {

// gate_up [N, 2f] → h [N, f].
void swiglu_forward(const Tensor& gate_up, Tensor& h);
// dgate_up [N, 2f] is overwritten from dh [N, f].
void swiglu_backward(const Tensor& dh, const Tensor& gate_up, Tensor& dgate_up);

}  // namespace tandem::kernels
