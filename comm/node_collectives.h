// Reductions and gathers among ranks that share a node, through their shared memory instead of
// messages: each rank stages its tensor in its own segment, reduces its block of the result by
// reading every peer's staging in place (in rank order, so every rank gets identical bits), and
// gathers the other blocks straight from their owners. One copy in, one pass over the inputs,
// one copy out — what MPI's shared-memory transport achieves, without a transport that aborts
// when a peer dies (a dead peer only leaves its signal unset, and the watchdog names it). The
// UCX backend runs its large collectives this way when the whole group is on one node.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <memory>

#include "comm/communicator.h"
#include "comm/shared_memory.h"

namespace tandem::comm {

class NodeCollectives {
 public:
  // Collective over `group`: null when its ranks cannot map each other's memory (other nodes).
  static std::unique_ptr<NodeCollectives> open(Communicator& group);
  ~NodeCollectives();

  // Each starts an operation and returns its step: call it until it returns true. Operations on
  // one group complete in the order they were started, as collectives must be issued.
  using Step = std::function<bool()>;
  Step all_reduce(Tensor tensor, ReduceOp op);
  Step reduce_scatter(Tensor input, Tensor output, ReduceOp op);
  Step all_gather(Tensor input, Tensor output);

 private:
  struct Op;
  NodeCollectives(std::shared_ptr<NodeSharedMemory> memory, int rank, std::vector<int> world_ranks);
  Step enqueue(std::shared_ptr<Op> op);
  void advance();
  bool advance(Op& op);
  void signal(int64_t value);
  // Whether every rank has signalled `value`; throws PeerLost once a rank that has not is found
  // dead (its process gone), instead of leaving the wait to the watchdog's deadline.
  bool everyone_reached(int64_t value);
  void stage(const Tensor& source);
  const char* staging_of(int rank);

  std::shared_ptr<NodeSharedMemory> memory_;
  int rank_, size_;
  std::vector<int> world_ranks_;
  std::chrono::steady_clock::time_point next_liveness_check_{};
  Tensor control_;                   // this rank's: a line per peer's progress, then its staging
  std::vector<char*> peer_control_;  // every rank's control block, mapped here
  Tensor staging_;                   // this rank's staged input (grown as needed)
  std::deque<std::shared_ptr<Op>> queue_;
  int64_t started_ = 0;
};

}  // namespace tandem::comm
