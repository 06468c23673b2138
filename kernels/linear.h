// Linear layers y = x·Wᵀ (W stored [out, in] as in PyTorch) with separate input-gradient (dgrad)
// and weight-gradient (wgrad) entry points, because zero-bubble schedules run wgrad later.
// Either every tensor has one float dtype (fp32, or fp64 on the CPU), or the two operands are
// bf16 and the result fp32: products of bf16 values are exact in fp32 and summed in fp32, on the
// CPU (widened to fp32, then sgemm) as in cuBLASLt's bf16 matmul.
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels {

// y[N, out] = x[N, in] · w[out, in]ᵀ  (+ y when accumulate).
void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate = false);
// dx[N, in] = dy[N, out] · w[out, in]  (+ dx when accumulate).
void linear_dgrad(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate = false);
// dw[out, in] += dy[N, out]ᵀ · x[N, in]  (always accumulates: gradients of micro-batches add up).
void linear_wgrad(const Tensor& dy, const Tensor& x, Tensor& dw);

}  // namespace tandem::kernels
