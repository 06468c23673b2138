// Collectives built from point-to-point messages, for backends whose native operations are tagged
// send and receive (UCX). Large reductions and gathers run as a ring (reduce-scatter, then
// all-gather), each block split into chunks so that sending, receiving and reducing overlap; each
// rank sends 2(N-1)/N of the buffer, the bandwidth-optimal amount. Every element's sum is formed
// on one rank in one fixed order and then copied, so every rank gets bit-identical results.
// Small tensors (losses, norms) go to every peer at once: one round instead of 2(N-1). When the
// whole group is on one node, large ones move through the node's shared memory instead
// (node_collectives.h), unless set_node_collectives(false) says to use messages.
#pragma once

#include <atomic>
#include <functional>
#include <memory>

#include "comm/communicator.h"
#include "comm/node_collectives.h"
#include "comm/watchdog.h"

namespace tandem::comm {

// The 64-bit tag of every message a P2PCommunicator sends, defined here and nowhere else:
//   bits 63..48  group id (16 bits): agreed in split(), so two groups that share a member never
//                have the same id; 0 is unused, the world is 1
//   bit  47      1: part of a collective; 0: a caller's send/recv
//   collective:  bits 46..34 sequence number modulo 2^13; bits 33..31 which collective (so a rank
//                in the wrong collective waits and is reported, instead of receiving another
//                collective's message); bits 30..16 part (ring step × chunks + chunk, or
//                exchange_rows' block index per peer)
//   send/recv:   bits 46..16 the caller's tag (0 <= tag < 2^31)
//   bits 15..0   source rank in the group
// A request that would need more than a field holds is refused with the numbers.
struct TagLayout {
  enum class Collective : uint64_t {
    kAllReduce,
    kReduceScatter,
    kAllGather,
    kBroadcast,
    kAllToAll,
    kExchangeRows,
    kBarrier
  };
  static constexpr uint64_t kMaxGroupId = (uint64_t{1} << 16) - 1;  // ids a rank can ever join
  static constexpr int64_t kMaxGroupSize = int64_t{1} << 16;
  static constexpr uint64_t kSequenceModulus = uint64_t{1} << 13;
  // Collectives in flight at once on one group: half the sequence space, so a wrapped sequence
  // number can never meet the operation it wrapped onto.
  static constexpr int64_t kMaxInFlight = int64_t{1} << 12;
  static constexpr uint64_t kMaxParts = uint64_t{1} << 15;
  static constexpr int64_t kMaxUserTag = (int64_t{1} << 31) - 1;
  static uint64_t collective(uint64_t group_id, Collective which, uint64_t seq, uint64_t part,
                             int source);
  static uint64_t user(uint64_t group_id, int64_t tag, int source);
};

// One posted message, completed by the backend.
class P2PRequest {
 public:
  virtual ~P2PRequest() = default;
  virtual bool test() = 0;  // throws the backend's error (PeerLost, ...) if the message failed
};

class P2PCommunicator : public Communicator {
 public:
  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(members_->size()); }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return *members_; }
  std::shared_ptr<Watchdog> watchdog() const override { return watchdog_; }
  uint16_t group_id() const { return group_id_; }
  // Payload bytes this rank has sent to other ranks on this group (what a NIC would carry).
  uint64_t bytes_sent() const { return bytes_sent_; }
  // Whether large collectives of a group on one node go through shared memory (default) or as
  // ring messages. Every rank of the group must say the same, before its first large collective;
  // groups split from this one inherit it.
  void set_node_collectives(bool enabled) { node_collectives_ = enabled; }
  bool node_collectives() const { return node_collectives_; }

  CommHandle all_reduce(Tensor& tensor, ReduceOp op = ReduceOp::kSum) override;
  CommHandle reduce_scatter(const Tensor& input, Tensor& output,
                            ReduceOp op = ReduceOp::kSum) override;
  CommHandle all_gather(const Tensor& input, Tensor& output) override;
  CommHandle broadcast(Tensor& tensor, int root) override;
  CommHandle all_to_all_v(const Tensor& send, const std::vector<int64_t>& send_rows, Tensor& recv,
                          const std::vector<int64_t>& recv_rows) override;
  CommHandle exchange_rows(const Tensor& send, const std::vector<RowBlock>& sends, Tensor& recv,
                           const std::vector<RowBlock>& recvs) override;
  CommHandle send(const Tensor& tensor, int peer, int tag) override;
  CommHandle recv(Tensor& tensor, int peer, int tag) override;
  CommHandle barrier() override;

  // Below this many bytes all_reduce sends the tensor to every peer (one round) instead of the
  // ring's 2(N-1) rounds; reduce_scatter and all_gather always use the ring.
  static constexpr size_t kRingMinBytes = 16 << 10;
  // Target size of one ring message: blocks are cut into chunks of about this many bytes.
  static constexpr size_t kRingChunkBytes = 512 << 10;

 protected:
  P2PCommunicator(std::string name, int rank, std::vector<int> world_ranks, uint16_t group_id,
                  std::shared_ptr<Watchdog> watchdog);
  // Backend: post a message to / from a group rank with a full 64-bit tag (see TagLayout).
  virtual std::unique_ptr<P2PRequest> post_send(const void* data, size_t bytes, int peer,
                                                uint64_t tag) = 0;
  virtual std::unique_ptr<P2PRequest> post_recv(void* data, size_t bytes, int peer,
                                                uint64_t tag) = 0;
  // Moves the backend's messages along; requests' test() only reads their state. Operations
  // keep it (and what it captures) alive, so it must not refer to the communicator itself.
  virtual std::function<void()> progress_engine() const = 0;

  class WatchedWork;
  // The operations in flight on one backend context (all its groups), in start order: testing
  // any of them advances all, since a peer may be waiting on another one. Shared by the groups
  // of one context (the backend makes one and hands it to every group it creates).
  struct ActiveWorks {
    std::vector<WatchedWork*> works;
    bool advancing = false;
  };
  virtual std::shared_ptr<ActiveWorks> active_works() const = 0;

  // The members of this rank's new group and the group's id, agreed over this group
  // (collective): the ids handed out are above every member's `next_free_id`, which each member
  // then raises past them, so no two groups with a common member share an id.
  struct SplitGroup {
    std::string name;
    int rank = 0;
    std::vector<int> world_ranks;
    uint16_t id = 0;
    bool node_collectives = true;
  };
  SplitGroup agree_split(int color, int key, uint64_t& next_free_id);

 private:
  class PlainWork;
  class RingWork;
  class StepWork;
  // The group's shared-memory collectives, opened (collectively) at the first large collective;
  // null when disabled or when the group spans nodes.
  NodeCollectives* node();
  CommHandle launch_steps(OpRecord op, NodeCollectives::Step step);
  // A started op as the watchdog and the in-flight count see it.
  OpRecord begin(const char* op, size_t bytes, bool collective, std::vector<int> peers = {});
  CommHandle launch(OpRecord op, std::vector<std::unique_ptr<P2PRequest>> requests,
                    std::function<void()> finish = {}, std::shared_ptr<void> keep_alive = {});
  std::unique_ptr<P2PRequest> send_bytes(const void* data, size_t bytes, int peer, uint64_t tag);
  CommHandle gather_and_reduce(Tensor& tensor, ReduceOp op);

  std::string name_;
  int rank_;
  std::shared_ptr<const std::vector<int>> members_;
  uint16_t group_id_;
  uint64_t seq_ = 0;
  int splits_ = 0;
  uint64_t bytes_sent_ = 0;
  std::shared_ptr<std::atomic<int64_t>> in_flight_;
  std::shared_ptr<Watchdog> watchdog_;
  bool node_collectives_ = true;
  int node_state_ = 0;  // 0: not asked yet, 1: open, -1: not possible or disabled
  std::unique_ptr<NodeCollectives> node_;
};

}  // namespace tandem::comm
