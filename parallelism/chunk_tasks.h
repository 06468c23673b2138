// A model chunk's forward and backward as phased tasks: the blocks run in order as in
// ModelChunk::forward / backward_input, except that an MoE layer whose experts are spread over an
// expert group puts the dispatch and combine all-to-alls between its sub-stages and pauses while
// they travel (DeepSeek-V3's attention / dispatch / MLP / combine split). The executor interleaves
// a forward task with a backward task at those pauses.
#pragma once

#include "comm/expert_dispatch.h"
#include "kernels/fp8.h"
#include "parallelism/phased_task.h"
#include "runtime/model/model_chunk.h"

namespace tandem::parallel {

// What the expert all-to-alls cost this rank: bytes sent to other ranks, and the time spent
// waiting for them (the part of the all-to-all that no computation hid).
struct AllToAllStats {
  int64_t bytes = 0;
  int64_t calls = 0;
  double wait_seconds = 0;
  void merge(const AllToAllStats& other) {
    bytes += other.bytes, calls += other.calls, wait_seconds += other.wait_seconds;
  }
};

struct ChunkComm {
  comm::ExpertDispatcher* dispatcher = nullptr;  // null: this chunk holds every expert
  AllToAllStats* stats = nullptr;
};

// input: tokens (embedding chunk) or hidden states. With the head, targets are required and the
// loss lands in state.loss_sum; otherwise the chunk's output is written to *output.
PhasedTask forward_task(ModelChunk& chunk, Tensor input, MicroBatchState& state,
                        const Tensor* targets, double grad_scale, Tensor* output, ChunkComm comm);
// dy: gradient of the chunk's output (ignored with the head). Writes the input gradient to *dx
// (undefined for the embedding chunk); weight gradients are queued as in
// ModelChunk::backward_input.
PhasedTask backward_task(ModelChunk& chunk, Tensor dy, MicroBatchState& state, Tensor* dx,
                         ChunkComm comm);

}  // namespace tandem::parallel
