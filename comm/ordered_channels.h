// A group whose point-to-point messages travel on ordered channels: each (sender, receiver,
// message class) has a two-rank group of its own, on which a message is matched by its place in
// the order alone. That is how NCCL matches (per peer and communicator, by posting order): one
// NCCL communicator for all pipeline messages would pair one micro-batch's activations with
// another's receive of the same size, and in its one stream a receive posted ahead would hold up
// every later send of the rank — a deadlock once two neighbours both wait. Per channel the
// sender's order is the receiver's (parallelism/pipeline_channels.h checks it for the job's
// programs), and each NCCL channel has a stream of its own. Over MPI or UCX the same channels,
// matched by order too, are the CPU twin the multi-rank tests run. Collectives and splits go to
// the whole group.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "comm/message_channel.h"

namespace tandem::comm {

class OrderedChannels final : public Communicator {
 public:
  // Collective over `group`: one split_some() of it per round (no rank twice in a round), each
  // making the round's channels, which then exchange one message to connect.
  OrderedChannels(Communicator& group, int message_classes,
                  const std::vector<std::vector<MessageChannel>>& rounds);

  int rank() const override { return group_.rank(); }
  int size() const override { return group_.size(); }
  const std::string& name() const override { return group_.name(); }
  const std::vector<int>& world_ranks() const override { return group_.world_ranks(); }
  std::shared_ptr<Watchdog> watchdog() const override { return group_.watchdog(); }
  Device device() const override { return group_.device(); }

  CommHandle all_reduce(Tensor& tensor, ReduceOp op) override {
    return group_.all_reduce(tensor, op);
  }
  CommHandle reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) override {
    return group_.reduce_scatter(input, output, op);
  }
  CommHandle all_gather(const Tensor& input, Tensor& output) override {
    return group_.all_gather(input, output);
  }
  CommHandle broadcast(Tensor& tensor, int root) override { return group_.broadcast(tensor, root); }
  CommHandle all_to_all_v(const Tensor& send, const std::vector<int64_t>& send_rows, Tensor& recv,
                          const std::vector<int64_t>& recv_rows) override {
    return group_.all_to_all_v(send, send_rows, recv, recv_rows);
  }
  CommHandle exchange_rows(const Tensor& send, const std::vector<RowBlock>& sends, Tensor& recv,
                           const std::vector<RowBlock>& recvs) override {
    return group_.exchange_rows(send, sends, recv, recvs);
  }
  CommHandle barrier() override { return group_.barrier(); }
  std::unique_ptr<Communicator> split(int color, int key) override {
    return group_.split(color, key);
  }
  std::unique_ptr<Communicator> split_some(int color, int key) override {
    return group_.split_some(color, key);
  }
  // On the channel (this rank → peer, the tag's class), whose rank 1 is the receiver.
  CommHandle send(const Tensor& tensor, int peer, int tag) override;
  // On the channel (peer → this rank, the tag's class), whose rank 0 is the sender.
  CommHandle recv(Tensor& tensor, int peer, int tag) override;

  size_t channels_here() const { return channels_.size(); }

 private:
  Communicator& channel(int from, int to, int tag, const char* op);
  Communicator& group_;
  int message_classes_;
  std::map<MessageChannel, std::unique_ptr<Communicator>> channels_;
};

}  // namespace tandem::comm
