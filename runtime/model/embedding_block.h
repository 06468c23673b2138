// Token embedding: tokens int32 [N] → hidden [N, d].
#pragma once

#include "runtime/core/config.h"
#include "runtime/model/block.h"

namespace tandem {

class EmbeddingBlock final : public Block {
 public:
  EmbeddingBlock(const ModelConfig& config, DType dtype, uint64_t seed);
  std::string name() const override { return "embedding"; }
  Tensor forward(const Tensor& tokens, std::unique_ptr<BlockState>& state) override;
  Tensor backward_input(const Tensor& dy, BlockState& state) override;
  std::vector<Parameter*> parameters() override { return {&table_}; }

 private:
  Parameter table_;
};

}  // namespace tandem
