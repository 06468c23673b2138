// A model chunk's forward and backward as phased tasks: the blocks run in order as in
// ModelChunk::forward / backward_input, except that an MoE layer whose experts are spread over an
// expert group puts the dispatch and combine all-to-alls between its sub-stages and pauses while
// they travel (DeepSeek-V3's attention / dispatch / MLP / combine split). The executor interleaves
// a forward task with a backward task at those pauses.
#pragma once

#include <functional>

#include "comm/expert_dispatch.h"
#include "comm/hierarchical_dispatch.h"
#include "kernels/fp8.h"
#include "parallelism/phased_task.h"
#include "parallelism/step_events.h"
#include "runtime/model/model_chunk.h"

namespace tandem::parallel {

// What the expert all-to-alls cost this rank: bytes sent to other ranks, and the time spent
// blocked on them (the part of the all-to-all that no computation hid; the executor adds it).
struct AllToAllStats {
  int64_t bytes = 0;
  int64_t calls = 0;
  double wait_seconds = 0;
  void merge(const AllToAllStats& other) {
    bytes += other.bytes, calls += other.calls, wait_seconds += other.wait_seconds;
  }
};

// Forward and backward tasks dispatch over separate communicators of the same expert group, so
// that each one's all-to-alls are issued in program order whichever task runs first.
// With hierarchical set instead (comm.dispatch = "hierarchical"), tokens cross to each node once
// and are fanned out there; those exchanges complete before the task goes on, so they are not
// overlapped with the other task of a pair.
struct ChunkComm {
  comm::ExpertDispatcher* forward = nullptr;  // null (and no hierarchical): every expert is here
  comm::ExpertDispatcher* backward = nullptr;
  comm::HierarchicalDispatcher* hierarchical = nullptr;
  AllToAllStats* stats = nullptr;
  StepEventLog* events = nullptr;  // when attached: each all-to-all and weight-gradient run
};

// input: tokens (embedding chunk) or hidden states. With the head, targets are required and the
// loss lands in state.loss_sum; otherwise the chunk's output is written to *output.
PhasedTask forward_task(ModelChunk& chunk, Tensor input, MicroBatchState& state,
                        const Tensor* targets, double grad_scale, Tensor* output, ChunkComm comm);
// dy: gradient of the chunk's output (ignored with the head). Writes the input gradient to *dx
// (undefined for the embedding chunk); weight gradients are queued as in
// ModelChunk::backward_input. With weights_in_gaps (a full B, not a zero-bubble b), the queued
// weight gradients of the blocks behind run right after each all-to-all starts, so that they fill
// the time it travels; ModelChunk::backward_weight then finds nothing left to run. after_block(i)
// then follows the last weight gradient of block i (blocks().size(): the head), as in
// ModelChunk::backward_weight.
PhasedTask backward_task(ModelChunk& chunk, Tensor dy, MicroBatchState& state, Tensor* dx,
                         ChunkComm comm, bool weights_in_gaps = false,
                         std::function<void(size_t block)> after_block = {});

}  // namespace tandem::parallel
