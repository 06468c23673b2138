// Token embedding block.
#include "runtime/model/embedding_block.h"

#include "kernels/embedding.h"

namespace tandem {

namespace {
struct EmbeddingState final : BlockState {
  Tensor tokens;
};
}  // namespace

EmbeddingBlock::EmbeddingBlock(const ModelConfig& config, DType dtype, uint64_t seed)
    : table_(make_parameter("embedding.weight", ParameterRole::kDense,
                            {config.vocab_size, config.d_model}, dtype, config.init_std, seed)) {}

Tensor EmbeddingBlock::forward(const Tensor& tokens, std::unique_ptr<BlockState>& state) {
  auto st = std::make_unique<EmbeddingState>();
  st->tokens = tokens;
  Tensor out = Tensor::empty({tokens.numel(), table_.value.dim(1)}, table_.value.dtype(),
                             table_.value.device());
  kernels::embedding_forward(tokens, table_.value, out);
  state = std::move(st);
  return out;
}

Tensor EmbeddingBlock::backward_input(const Tensor& dy, BlockState& state) {
  Tensor tokens = static_cast<EmbeddingState&>(state).tokens;
  state.deferred_wgrad.push_back(
      [this, tokens, dy] { kernels::embedding_wgrad(tokens, dy, table_.grad); });
  return Tensor();  // tokens have no gradient
}

}  // namespace tandem
