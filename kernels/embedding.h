// Token embedding lookup and its weight gradient (there is no input gradient: tokens are ints).
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels {

// out[n, :] = table[tokens[n], :]; tokens int32 [N], table [V, d]. Out-of-range ids are an error.
void embedding_forward(const Tensor& tokens, const Tensor& table, Tensor& out);
// dtable[tokens[n], :] += dout[n, :].
void embedding_wgrad(const Tensor& tokens, const Tensor& dout, Tensor& dtable);

}  // namespace tandem::kernels
