// A contiguous slice of the model that one pipeline stage owns: optionally the embedding, layers
// [first_layer, last_layer), optionally the head. A single process owns one chunk with everything.
// Each micro-batch in flight keeps its own MicroBatchState, so schedules may interleave many.
// forward_task / backward_task are the one walk through the blocks; at an MoE block it runs the
// block's own walk with the MoeExchange it is given, so the single process (forward,
// backward_input: every expert here) and expert parallelism (parallelism/chunk_tasks.h) run the
// same code.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "runtime/core/config.h"
#include "runtime/model/block.h"
#include "runtime/model/head_block.h"
#include "runtime/model/moe_block.h"
#include "runtime/model/moe_exchange.h"
#include "runtime/model/pass.h"

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
  std::vector<std::unique_ptr<BlockState>> blocks;  // one per block, in forward order (training)
  std::unique_ptr<BlockState> head;
  double loss_sum = 0;     // Σ token losses of this micro-batch (head chunks only)
  bool evaluated = false;  // the forward was an evaluation: nothing was kept, no backward follows
};

class ModelChunk {
 public:
  // The parameters are initialised on the CPU (the same values for any device) and then moved
  // to `device`, where the chunk's kernels run.
  ModelChunk(const ModelConfig& config, uint64_t seed, ChunkSpec spec, const Fp8Config& fp8 = {},
             Device device = Device::cpu());

  // input: tokens int32 [N] when the chunk has the embedding, else hidden [N, d]. With the head,
  // targets are required, the loss lands in state.loss_sum and the returned tensor is undefined.
  // A training pass keeps in state what the backward needs; an evaluation drops each block's
  // state as soon as the next block has its output, and keeps nothing.
  Tensor forward(const Tensor& input, MicroBatchState& state, const Tensor* targets, Pass pass);
  // dy is the gradient of the chunk's output (ignored, may be undefined, with the head). Returns
  // the gradient of the input (undefined with the embedding). Weight gradients are only queued.
  // Refused after an evaluation forward.
  Tensor backward_input(const Tensor& dy, MicroBatchState& state);
  // Runs the queued weight gradients of this micro-batch, last block first, and frees its
  // activations. after_block(i) follows block i's (i = blocks().size() is the head), so a caller
  // can start reducing gradients that are complete while the earlier blocks still compute.
  void backward_weight(MicroBatchState& state,
                       const std::function<void(size_t block)>& after_block = {});

  // The walks themselves, as phased tasks that pause wherever `exchange` has rows in flight. The
  // forward writes the chunk's output to *output (not with the head). The backward writes the
  // input gradient to *dx. With weights_in_gaps, the queued weight gradients of the blocks behind
  // run right after each of an MoE block's movements starts, so that they fill the time it
  // travels (backward_weight then finds nothing left to run); after_block(i) then follows the
  // last weight gradient of block i, as in backward_weight.
  PhasedTask forward_task(Tensor input, MicroBatchState& state, const Tensor* targets, Pass pass,
                          Tensor* output, MoeExchange& exchange);
  PhasedTask backward_task(Tensor dy, MicroBatchState& state, Tensor* dx, MoeExchange& exchange,
                           bool weights_in_gaps = false,
                           std::function<void(size_t block)> after_block = {});

  const ChunkSpec& spec() const { return spec_; }
  DType dtype() const { return dtype_; }
  int64_t hidden_size() const { return d_model_; }
  Device device() const { return device_; }  // where its parameters live and its kernels run
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
  Device device_;
  std::unique_ptr<kernels::Fp8Stats> fp8_stats_;  // stable address: blocks point at it
  // Refuses a backward of a state that no training forward filled.
  void check_backward(const MicroBatchState& state) const;

  std::vector<std::unique_ptr<Block>> blocks_;
  std::vector<MoeFfnBlock*> moe_of_block_;  // per block: the block as an MoE block, or null
  std::vector<MoeFfnBlock*> moe_blocks_;
  std::unique_ptr<HeadBlock> head_;
};

}  // namespace tandem
