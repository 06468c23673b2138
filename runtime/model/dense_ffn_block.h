// Pre-norm dense SwiGLU feed-forward sub-layer: y = x + mlp(norm(x)).
#pragma once

#include "runtime/core/config.h"
#include "runtime/model/block.h"
#include "runtime/model/fp8_linear.h"

namespace tandem {

class DenseFfnBlock final : public Block {
 public:
  DenseFfnBlock(const ModelConfig& config, int64_t layer, DType dtype, uint64_t seed,
                Fp8Settings fp8 = {});
  std::string name() const override { return "layers." + std::to_string(layer_) + ".ffn"; }
  Tensor forward(const Tensor& x, std::unique_ptr<BlockState>& state) override;
  Tensor backward_input(const Tensor& dy, BlockState& state) override;
  std::vector<Parameter*> parameters() override { return {&norm_, &w13_, &w2_}; }

 private:
  double norm_eps_;
  Fp8Settings fp8_;
  int64_t layer_;
  Parameter norm_;
  Parameter w13_;  // [2·d_ff, d]
  Parameter w2_;   // [d, d_ff]
};

}  // namespace tandem
