// Test-only: a communicator that forwards everything to another one but makes every all-to-all
// (all_to_all_v and exchange_rows) complete no earlier than a fixed latency after it started, as
// a slower network would. Waiting sleeps, so an oversubscribed machine gives the core away.
#pragma once

#include <chrono>
#include <memory>
#include <thread>

#include "comm/communicator.h"

namespace tandem::testing {

class LatencyCommunicator final : public comm::Communicator {
 public:
  LatencyCommunicator(comm::Communicator& inner, std::chrono::microseconds latency)
      : inner_(inner), latency_(latency) {}
  void set_latency(std::chrono::microseconds latency) { latency_ = latency; }
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  const std::string& name() const override { return inner_.name(); }
  const std::vector<int>& world_ranks() const override { return inner_.world_ranks(); }
  Device device() const override { return inner_.device(); }
  comm::CommHandle all_reduce(Tensor& t, comm::ReduceOp op) override {
    return inner_.all_reduce(t, op);
  }
  comm::CommHandle reduce_scatter(const Tensor& in, Tensor& out, comm::ReduceOp op) override {
    return inner_.reduce_scatter(in, out, op);
  }
  comm::CommHandle all_gather(const Tensor& in, Tensor& out) override {
    return inner_.all_gather(in, out);
  }
  comm::CommHandle broadcast(Tensor& t, int root) override { return inner_.broadcast(t, root); }
  comm::CommHandle all_to_all_v(const Tensor& send, const std::vector<int64_t>& send_rows,
                                Tensor& recv, const std::vector<int64_t>& recv_rows) override {
    return delayed(inner_.all_to_all_v(send, send_rows, recv, recv_rows));
  }
  comm::CommHandle exchange_rows(const Tensor& send, const std::vector<comm::RowBlock>& sends,
                                 Tensor& recv, const std::vector<comm::RowBlock>& recvs) override {
    return delayed(inner_.exchange_rows(send, sends, recv, recvs));
  }
  comm::CommHandle send(const Tensor& t, int peer, int tag) override {
    return inner_.send(t, peer, tag);
  }
  comm::CommHandle recv(Tensor& t, int peer, int tag) override { return inner_.recv(t, peer, tag); }
  comm::CommHandle barrier() override { return inner_.barrier(); }
  std::unique_ptr<comm::Communicator> split(int color, int key) override {
    return inner_.split(color, key);
  }

 private:
  class Delayed final : public comm::Work {
   public:
    Delayed(comm::CommHandle inner, std::chrono::steady_clock::time_point ready)
        : inner_(std::move(inner)), ready_(ready) {}
    bool test() override { return std::chrono::steady_clock::now() >= ready_ && inner_.test(); }
    void wait() override {
      std::this_thread::sleep_until(ready_);
      inner_.wait();
    }
    std::string describe() const override { return "a delayed operation"; }

   private:
    comm::CommHandle inner_;
    std::chrono::steady_clock::time_point ready_;
  };
  comm::CommHandle delayed(comm::CommHandle inner) {
    return comm::CommHandle(
        std::make_unique<Delayed>(std::move(inner), std::chrono::steady_clock::now() + latency_));
  }
  comm::Communicator& inner_;
  std::chrono::microseconds latency_;
};

}  // namespace tandem::testing
