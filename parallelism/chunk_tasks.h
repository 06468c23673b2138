// A model chunk's forward and backward under expert parallelism: the chunk's own walk
// (ModelChunk::forward_task / backward_task) with the exchange that moves an MoE layer's rows
// between the ranks of its expert group. The flat exchange puts the dispatch and combine
// all-to-alls between the block's sub-stages and the walk pauses while they travel
// (DeepSeek-V3's attention / dispatch / MLP / combine split); the executor interleaves a forward
// task with a backward task at those pauses.
#pragma once

#include <array>
#include <functional>
#include <memory>

#include "comm/expert_dispatch.h"
#include "comm/hierarchical_dispatch.h"
#include "runtime/core/phased_task.h"
#include "runtime/model/model_chunk.h"

namespace tandem::parallel {

// Which way an exchange moves rows: to the experts (the dispatch with its counts, and the
// combine's backward, which carries the gradients of the experts' outputs) or back to the tokens
// (the combine, and the dispatch's backward).
enum class ExchangeDirection { kDispatch = 0, kCombine = 1 };

// What the expert all-to-alls cost this rank, per direction: bytes sent to other ranks, and the
// time spent blocked on them (the part that no computation hid: the task runner books it to the
// exchange it waited for, see InFlight::add_exposed_seconds).
struct AllToAllStats {
  struct Direction {
    int64_t bytes = 0;
    int64_t calls = 0;
    double wait_seconds = 0;
  };
  std::array<Direction, 2> directions;  // by ExchangeDirection
  Direction& operator[](ExchangeDirection d) { return directions[static_cast<size_t>(d)]; }
  const Direction& operator[](ExchangeDirection d) const {
    return directions[static_cast<size_t>(d)];
  }
  int64_t bytes() const { return directions[0].bytes + directions[1].bytes; }
  int64_t calls() const { return directions[0].calls + directions[1].calls; }
  double wait_seconds() const { return directions[0].wait_seconds + directions[1].wait_seconds; }
  void merge(const AllToAllStats& other) {
    for (size_t d = 0; d < directions.size(); ++d) {
      directions[d].bytes += other.directions[d].bytes;
      directions[d].calls += other.directions[d].calls;
      directions[d].wait_seconds += other.directions[d].wait_seconds;
    }
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
