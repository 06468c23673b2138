// Final RMSNorm, LM head and cross-entropy. The loss gradient is formed in the same pass as the
// loss (fused), so backward_input needs no incoming gradient.
#pragma once

#include "runtime/core/config.h"
#include "runtime/model/block.h"
#include "runtime/model/ops.h"

namespace tandem {

class HeadBlock {
 public:
  HeadBlock(const ModelConfig& config, DType dtype, uint64_t seed);
  // Returns Σ over rows of −log p(target). With grad_scale > 0 it also prepares the backward:
  // d(loss)/d(logits) = grad_scale · (softmax − onehot), where grad_scale is 1 / (tokens in the
  // global batch) so that micro-batch gradients add up to the gradient of the mean loss.
  double forward_loss(const Tensor& x, const Tensor& targets, double grad_scale,
                      std::unique_ptr<BlockState>& state);
  Tensor backward_input(BlockState& state);
  std::vector<Parameter*> parameters() { return {&norm_, &weight_}; }

 private:
  double norm_eps_;
  Parameter norm_;
  Parameter weight_;  // [V, d]
};

}  // namespace tandem
