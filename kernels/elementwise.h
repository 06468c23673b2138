// Elementwise helpers used between layers: residual adds and scaling.
#pragma once

#include <vector>

#include "runtime/core/tensor.h"

namespace tandem::kernels {

// y += alpha * x (same shape and dtype).
void axpy(double alpha, const Tensor& x, Tensor& y);
// x *= alpha.
void scale(Tensor& x, double alpha);
// Sum of squares of all elements, accumulated in double.
double sum_of_squares(const Tensor& x);
// The sum over tensors on one device of their sums of squares, added in this order: on a GPU one
// wait for the device in all, where a call per tensor waits once per tensor (the gradient norm
// over every parameter).
double sum_of_squares(const std::vector<const Tensor*>& tensors);
// dst = src converted elementwise between fp32 and bf16 (round to nearest even), or copied when
// the dtypes are equal.
void convert(const Tensor& src, Tensor& dst);

}  // namespace tandem::kernels
