// Pre-norm causal self-attention sub-layer with rotary embeddings: y = x +
// Wo·attn(rope(Wqkv·norm(x))).
#pragma once

#include "runtime/core/config.h"
#include "runtime/model/block.h"
#include "runtime/model/fp8_linear.h"

namespace tandem {

class AttentionBlock final : public Block {
 public:
  AttentionBlock(const ModelConfig& config, int64_t layer, DType dtype, uint64_t seed,
                 Fp8Settings fp8 = {});
  std::string name() const override { return "layers." + std::to_string(layer_) + ".attention"; }
  Tensor forward(const Tensor& x, std::unique_ptr<BlockState>& state) override;
  Tensor backward_input(const Tensor& dy, BlockState& state) override;
  std::vector<Parameter*> parameters() override { return {&norm_, &wqkv_, &wo_}; }

 private:
  ModelConfig config_;
  Fp8Settings fp8_;  // for the qkv and output projections
  int64_t layer_;
  Parameter norm_;
  Parameter wqkv_;  // [3d, d]: q, k, v projections stacked
  Parameter wo_;    // [d, d]
};

}  // namespace tandem
