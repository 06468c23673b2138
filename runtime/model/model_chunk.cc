// Building a model slice from the configuration and running its blocks in order.
#include "runtime/model/model_chunk.h"

#include "runtime/model/attention_block.h"
#include "runtime/model/dense_ffn_block.h"
#include "runtime/model/embedding_block.h"

namespace tandem {

ModelChunk::ModelChunk(const ModelConfig& config, uint64_t seed, ChunkSpec spec,
                       const Fp8Config& fp8, Device device)
    : spec_(spec),
      dtype_(config.dtype),
      d_model_(config.d_model),
      device_(device),
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
  for (const auto& block : blocks_)
    moe_of_block_.push_back(dynamic_cast<MoeFfnBlock*>(block.get()));
  if (spec.has_head) head_ = std::make_unique<HeadBlock>(config, dtype_, seed);
  if (device == Device::cpu()) return;
  for (Parameter* p : parameters()) {
    p->value = p->value.to(device);
    p->grad = p->grad.to(device);
  }
  for (MoeFfnBlock* moe : moe_blocks_) moe->move_bias_to(device);
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
                           Pass pass) {
  LocalMoeExchange local;
  Tensor output;
  forward_task(input, state, targets, pass, &output, local).run_to_end();
  return output;
}

Tensor ModelChunk::backward_input(const Tensor& dy, MicroBatchState& state) {
  LocalMoeExchange local;
  Tensor dx;
  backward_task(dy, state, &dx, local).run_to_end();
  return dx;
}

void ModelChunk::check_backward(const MicroBatchState& state) const {
  TANDEM_CHECK(!state.evaluated,
               "backward after an evaluation forward, which keeps nothing for a backward; take "
               "gradients after a forward with Pass::train");
  TANDEM_CHECK(state.blocks.size() == blocks_.size(), "backward without a matching forward");
}

PhasedTask ModelChunk::forward_task(Tensor input, MicroBatchState& state, const Tensor* targets,
                                    Pass pass, Tensor* output, MoeExchange& exchange) {
  TANDEM_CHECK(!head_ || targets != nullptr, "the chunk with the head needs targets");
  state = MicroBatchState{};
  state.evaluated = !pass.training();
  if (pass.training()) state.blocks.resize(blocks_.size());
  Tensor x = std::move(input);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    std::unique_ptr<BlockState> block_state;
    if (MoeFfnBlock* moe = moe_of_block_[i]) {
      auto moe_state = std::make_unique<MoeState>();
      Tensor y;
      co_await moe->forward_task(x, *moe_state, exchange, &y);
      block_state = std::move(moe_state);
      x = std::move(y);
    } else {
      x = blocks_[i]->forward(x, block_state);
    }
    // An evaluation lets the block's activations go here, once the next block has the output.
    if (pass.training()) state.blocks[i] = std::move(block_state);
  }
  if (head_) {
    state.loss_sum = head_->forward_loss(x, *targets, pass, state.head);
  } else {
    *output = std::move(x);
  }
}

PhasedTask ModelChunk::backward_task(Tensor dy, MicroBatchState& state, Tensor* dx,
                                     MoeExchange& exchange, bool weights_in_gaps,
                                     std::function<void(size_t block)> after_block) {
  check_backward(state);
  const size_t n = blocks_.size();
  Tensor grad = head_ ? head_->backward_input(*state.head) : std::move(dy);
  // Weight gradients queued by the blocks from `first` on (and the head) that have not run yet.
  // A block is reported complete once its input gradient is done too (nothing more can be
  // queued for it): blocks from input_done on.
  size_t input_done = n, reported = n + 1;
  auto run_weights_from = [&](size_t first) {
    if (!weights_in_gaps) return;
    record_event(exchange.event_log(), StepEventKind::kWeightGradientBegin);
    if (state.head) run_deferred_wgrad(*state.head);
    for (size_t j = first; j < n; ++j) run_deferred_wgrad(*state.blocks[j]);
    record_event(exchange.event_log(), StepEventKind::kWeightGradientEnd);
    if (!after_block) return;
    if (reported == n + 1) after_block(reported = n);
    while (reported > input_done) after_block(--reported);
  };
  for (size_t i = n; i-- > 0;) {
    if (MoeFfnBlock* moe = moe_of_block_[i]) {
      Tensor d_input;
      co_await moe->backward_task(
          grad, static_cast<MoeState&>(*state.blocks[i]), exchange, &d_input,
          [&](bool experts_queued) { run_weights_from(experts_queued ? i : i + 1); });
      grad = std::move(d_input);
    } else {
      grad = blocks_[i]->backward_input(grad, *state.blocks[i]);
    }
    input_done = i;
  }
  *dx = std::move(grad);
  run_weights_from(0);
}

void ModelChunk::backward_weight(MicroBatchState& state,
                                 const std::function<void(size_t block)>& after_block) {
  TANDEM_CHECK(!state.evaluated,
               "weight gradients after an evaluation forward, which keeps nothing for a backward");
  if (head_ && state.head) run_deferred_wgrad(*state.head);
  if (after_block) after_block(blocks_.size());
  for (size_t i = state.blocks.size(); i-- > 0;) {
    blocks_[i]->backward_weight(*state.blocks[i]);
    if (after_block) after_block(i);
  }
  state = MicroBatchState{};
}

}  // namespace tandem
