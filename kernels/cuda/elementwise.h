// The CUDA side of kernels/elementwise.h on fp32 device tensors, on the device's compute stream:
// axpy and scale as the CPU reference computes them, the sum of squares accumulated in double
// (in another order than the CPU's), conversions and transposes.
#pragma once

#include <vector>

#include "runtime/core/tensor.h"

namespace tandem::kernels::cuda {

void axpy(double alpha, const Tensor& x, Tensor& y);
void scale(Tensor& x, double alpha);
// Over tensors on one device, with one wait for it.
double sum_of_squares(const std::vector<const Tensor*>& tensors);
// fp32 <-> bf16 with the CPU's rounding (nearest even, NaN kept).
void convert(const Tensor& src, Tensor& dst);
// dst[c, r] = src[r, c] for 2-D tensors of 1- or 4-byte elements (FP8 codes, fp32 scales).
void transpose(const Tensor& src, Tensor& dst);

}  // namespace tandem::kernels::cuda
