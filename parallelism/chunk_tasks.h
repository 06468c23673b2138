// A model chunk's forward and backward under expert parallelism: the chunk's own walk
// (ModelChunk::forward_task / backward_task) with the exchange that moves an MoE layer's rows
// between the ranks of its expert group. The flat exchange puts the dispatch and combine
// all-to-alls between the block's sub-stages and the walk pauses while they travel
// (DeepSeek-V3's attention / dispatch / MLP / combine split); the executor interleaves a forward
// task with a backward task at those pauses.
#pragma once

#include <functional>
#include <memory>

#include "comm/expert_dispatch.h"
#include "comm/hierarchical_dispatch.h"
#include "runtime/core/phased_task.h"
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

// The exchange a chunk's forward or backward task uses under `comm`: hierarchical, flat over the
// forward or the backward communicator, or local when no dispatcher is given.
enum class ExchangeFor { kForward, kBackward };
std::unique_ptr<MoeExchange> make_exchange(const ChunkComm& comm, ExchangeFor task);

// ModelChunk::forward_task with the exchange `comm` calls for. input: tokens (embedding chunk) or
// hidden states. With the head, targets are required and the loss lands in state.loss_sum;
// otherwise the chunk's output is written to *output.
PhasedTask forward_task(ModelChunk& chunk, Tensor input, MicroBatchState& state,
                        const Tensor* targets, Pass pass, Tensor* output, ChunkComm comm);
// ModelChunk::backward_task likewise (weights_in_gaps: a full B, not a zero-bubble b).
PhasedTask backward_task(ModelChunk& chunk, Tensor dy, MicroBatchState& state, Tensor* dx,
                         ChunkComm comm, bool weights_in_gaps = false,
                         std::function<void(size_t block)> after_block = {});

}  // namespace tandem::parallel
