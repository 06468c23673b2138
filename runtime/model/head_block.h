// Final RMSNorm, LM head and cross-entropy. The loss gradient is formed in the same pass as the
// loss (fused), so backward_input needs no incoming gradient.
#pragma once

#include "runtime/core/config.h"
#include "runtime/model/block.h"
#include "runtime/model/ops.h"
#include "runtime/model/pass.h"

namespace tandem {

class HeadBlock {
 public:
  HeadBlock(const ModelConfig& config, DType dtype, uint64_t seed);
  // Returns Σ over rows of −log p(target). A training pass also prepares the backward in state:
  // d(loss)/d(logits) = grad_scale · (softmax − onehot) (runtime/model/pass.h); an evaluation
  // leaves state empty.
  double forward_loss(const Tensor& x, const Tensor& targets, Pass pass,
                      std::unique_ptr<BlockState>& state);
  Tensor backward_input(BlockState& state);
  std::vector<Parameter*> parameters() { return {&norm_, &weight_}; }

 private:
  double norm_eps_;
  Parameter norm_;
  Parameter weight_;  // [V, d]
};

}  // namespace tandem
