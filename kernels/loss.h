// Cross-entropy over vocabulary logits, fused with its gradient.
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels {

// Returns Σ_n −log softmax(logits[n])[targets[n]] (in double). When dlogits is defined it is
// overwritten with grad_scale·(softmax − onehot); it may alias logits. targets int32 [N].
double cross_entropy(const Tensor& logits, const Tensor& targets, double grad_scale,
                     Tensor* dlogits);

}  // namespace tandem::kernels
