// Building a model slice from the configuration and running its blocks in order.
#include "runtime/model/model_chunk.h"

#include "runtime/model/attention_block.h"
#include "runtime/model/dense_ffn_block.h"
#include "runtime/model/embedding_block.h"

namespace tandem {

ModelChunk::ModelChunk(const ModelConfig& config, uint64_t seed, ChunkSpec spec,
                       const Fp8Config& fp8)
    : spec_(spec),
      dtype_(config.dtype),
      d_model_(config.d_model),
      fp8_stats_(std::make_unique<kernels::Fp8Stats>()) {
  const Fp8Settings ffn_fp8 = Fp8Settings::from_config(fp8, fp8_stats_.get());
  Fp8Settings attention_fp8 = ffn_fp8;
  attention_fp8.enabled = fp8.enabled && fp8.attention;
  TANDEM_CHECK(0 <= spec.first_layer && spec.first_layer <= spec.last_layer &&
                   spec.last_layer <= config.n_layers,
               "chunk layers [", spec.first_layer, ", ", spec.last_layer, ") of ", config.n_layers);
  if (spec.has_embedding) blocks_.push_back(std::make_unique<EmbeddingBlock>(config, dtype_, seed));
  for (int64_t layer = spec.first_layer; layer < spec.last_layer; ++layer) {
    blocks_.push_back(std::make_unique<AttentionBlock>(config, layer, dtype_, seed, attention_fp8));
    if (layer < config.n_dense_layers) {
      blocks_.push_back(std::make_unique<DenseFfnBlock>(config, layer, dtype_, seed, ffn_fp8));
    } else {
      auto moe = std::make_unique<MoeFfnBlock>(config, layer, dtype_, seed, ffn_fp8, spec.experts);
      moe_blocks_.push_back(moe.get());
      blocks_.push_back(std::move(moe));
    }
  }
  if (spec.has_head) head_ = std::make_unique<HeadBlock>(config, dtype_, seed);
}

std::vector<Parameter*> ModelChunk::parameters() {
  std::vector<Parameter*> out;
  for (auto& block : blocks_)
    for (Parameter* p : block->parameters()) out.push_back(p);
  if (head_)
    for (Parameter* p : head_->parameters()) out.push_back(p);
  return out;
}

std::vector<Block*> ModelChunk::blocks() const {
  std::vector<Block*> out;
  for (const auto& block : blocks_) out.push_back(block.get());
  return out;
}

Tensor ModelChunk::forward(const Tensor& input, MicroBatchState& state, const Tensor* targets,
                           double grad_scale) {
  state.blocks.resize(blocks_.size());
  Tensor x = input;
  for (size_t i = 0; i < blocks_.size(); ++i) x = blocks_[i]->forward(x, state.blocks[i]);
  if (!head_) return x;
  TANDEM_CHECK(targets != nullptr, "the chunk with the head needs targets");
  state.loss_sum = head_->forward_loss(x, *targets, grad_scale, state.head);
  if (grad_scale == 0) state.blocks.clear();  // evaluation: nothing is kept for a backward
  return Tensor();
}

Tensor ModelChunk::backward_input(const Tensor& dy, MicroBatchState& state) {
  TANDEM_CHECK(state.blocks.size() == blocks_.size(), "backward without a matching forward");
  Tensor grad = head_ ? head_->backward_input(*state.head) : dy;
  for (size_t i = blocks_.size(); i-- > 0;)
    grad = blocks_[i]->backward_input(grad, *state.blocks[i]);
  return grad;
}

void ModelChunk::backward_weight(MicroBatchState& state,
                                 const std::function<void(size_t block)>& after_block) {
  if (head_ && state.head) run_deferred_wgrad(*state.head);
  if (after_block) after_block(blocks_.size());
  for (size_t i = state.blocks.size(); i-- > 0;) {
    blocks_[i]->backward_weight(*state.blocks[i]);
    if (after_block) after_block(i);
  }
  state = MicroBatchState{};
}

}  // namespace tandem
