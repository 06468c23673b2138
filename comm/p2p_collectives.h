// Collectives built from point-to-point messages, for backends whose native operations are tagged
// send and receive (UCX). Each collective posts every receive and send at once and finishes with
// a local step (a reduction in rank order, or nothing): simple, deterministic — every rank sums
// in the same order, so all ranks get bit-identical results — and sized for the group sizes of
// pipeline and expert traffic, not for thousand-rank all-reduces.
#pragma once

#include <functional>
#include <memory>

#include "comm/communicator.h"
#include "comm/watchdog.h"

namespace tandem::comm {

// One posted message, completed by the backend.
class P2PRequest {
 public:
  virtual ~P2PRequest() = default;
  virtual bool test() = 0;
};

class P2PCommunicator : public Communicator {
 public:
  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(world_ranks_.size()); }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }

  CommHandle all_reduce(Tensor& tensor, ReduceOp op) override;
  CommHandle reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) override;
  CommHandle all_gather(const Tensor& input, Tensor& output) override;
  CommHandle broadcast(Tensor& tensor, int root) override;
  CommHandle all_to_all_v(const Tensor& send, const std::vector<int64_t>& send_rows, Tensor& recv,
                          const std::vector<int64_t>& recv_rows) override;
  CommHandle exchange_rows(const Tensor& send, const std::vector<RowBlock>& sends, Tensor& recv,
                           const std::vector<RowBlock>& recvs) override;
  CommHandle send(const Tensor& tensor, int peer, int tag) override;
  CommHandle recv(Tensor& tensor, int peer, int tag) override;
  CommHandle barrier() override;

 protected:
  P2PCommunicator(std::string name, int rank, std::vector<int> world_ranks, uint16_t group_id,
                  std::shared_ptr<Watchdog> watchdog);
  // Backend: post a message to / from a group rank with a full 64-bit tag (see make_tag).
  virtual std::unique_ptr<P2PRequest> post_send(const void* data, size_t bytes, int peer,
                                                uint64_t tag) = 0;
  virtual std::unique_ptr<P2PRequest> post_recv(void* data, size_t bytes, int peer,
                                                uint64_t tag) = 0;
  // Tags: [group 16 bits][collective 1][sequence or user tag 31][source group rank 16].
  uint64_t make_tag(bool collective, uint64_t seq_or_tag, int source) const;

  struct Pending;
  CommHandle launch(const char* op, size_t bytes, bool collective,
                    std::vector<std::unique_ptr<P2PRequest>> requests,
                    std::function<void()> finish = {}, std::shared_ptr<void> keep_alive = {});
  CommHandle gather_and_reduce(const char* op_name, size_t op_bytes, Tensor target,
                               const char* source, size_t stride, ReduceOp op);
  uint16_t group_id() const { return group_id_; }
  std::shared_ptr<Watchdog> watchdog() const { return watchdog_; }
  uint64_t next_collective() { return ++seq_; }

 private:
  std::string name_;
  int rank_;
  std::vector<int> world_ranks_;
  uint16_t group_id_;
  uint64_t seq_ = 0;
  std::shared_ptr<Watchdog> watchdog_;
};

}  // namespace tandem::comm
