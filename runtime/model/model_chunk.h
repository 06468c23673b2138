// A contiguous slice of the model that one pipeline stage owns: optionally the embedding, layers
// [first_layer, last_layer), optionally the head. A single process owns one chunk with everything.
// Each micro-batch in flight keeps its own MicroBatchState, so schedules may interleave many.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "runtime/core/config.h"
#include "runtime/model/block.h"
#include "runtime/model/head_block.h"
#include "runtime/model/moe_block.h"

namespace tandem {

struct ChunkSpec {
  int64_t first_layer = 0;
  int64_t last_layer = 0;
  bool has_embedding = false;
  bool has_head = false;
  ExpertShard experts;  // which routed experts of each MoE layer this chunk holds
  static ChunkSpec whole_model(const ModelConfig& config) {
    return {0, config.n_layers, true, true, {}};
  }
};

struct MicroBatchState {
  std::vector<std::unique_ptr<BlockState>> blocks;  // one per block, in forward order
  std::unique_ptr<BlockState> head;
  double loss_sum = 0;  // Σ token losses of this micro-batch (head chunks only)
};

class ModelChunk {
 public:
  ModelChunk(const ModelConfig& config, uint64_t seed, ChunkSpec spec, const Fp8Config& fp8 = {});

  // input: tokens int32 [N] when the chunk has the embedding, else hidden [N, d]. With the head,
  // targets are required, the loss lands in state.loss_sum and the returned tensor is undefined.
  // grad_scale (see HeadBlock) is 0 for evaluation, which keeps nothing for a backward.
  Tensor forward(const Tensor& input, MicroBatchState& state, const Tensor* targets = nullptr,
                 double grad_scale = 0);
  // dy is the gradient of the chunk's output (ignored, may be undefined, with the head). Returns
  // the gradient of the input (undefined with the embedding). Weight gradients are only queued.
  Tensor backward_input(const Tensor& dy, MicroBatchState& state);
  // Runs the queued weight gradients of this micro-batch, last block first, and frees its
  // activations. after_block(i) follows block i's (i = blocks().size() is the head), so a caller
  // can start reducing gradients that are complete while the earlier blocks still compute.
  void backward_weight(MicroBatchState& state,
                       const std::function<void(size_t block)>& after_block = {});

  const ChunkSpec& spec() const { return spec_; }
  DType dtype() const { return dtype_; }
  int64_t hidden_size() const { return d_model_; }
  std::vector<Parameter*> parameters();
  std::vector<MoeFfnBlock*> moe_blocks() const { return moe_blocks_; }
  // The blocks in forward order (embedding first when present) and the head (null when absent),
  // for runners that put communication between sub-stages (parallelism/).
  std::vector<Block*> blocks() const;
  HeadBlock* head() const { return head_.get(); }
  // What every FP8 quantisation of this chunk has seen since the last reset.
  kernels::Fp8Stats& fp8_stats() { return *fp8_stats_; }

 private:
  ChunkSpec spec_;
  DType dtype_;
  int64_t d_model_;
  std::unique_ptr<kernels::Fp8Stats> fp8_stats_;  // stable address: blocks point at it
  std::vector<std::unique_ptr<Block>> blocks_;
  std::vector<MoeFfnBlock*> moe_blocks_;
  std::unique_ptr<HeadBlock> head_;
};

}  // namespace tandem
