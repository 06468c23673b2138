// The MPI backend (Open MPI): CPU tensors, non-blocking MPI collectives behind Communicator.
// Always available; it also bootstraps the other backends.
#pragma once

#include <mpi.h>

#include <memory>

#include "comm/communicator.h"
#include "comm/store.h"
#include "comm/watchdog.h"

namespace tandem::comm {

class MpiCommunicator final : public Communicator {
 public:
  // MPI_COMM_WORLD. Initialises MPI on first use (finalised at exit), and serves the out-of-band
  // store from world rank 0 (its address is broadcast over MPI) for the watchdog.
  static std::unique_ptr<MpiCommunicator> world(const WatchdogOptions& options = {});
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
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
  std::unique_ptr<Communicator> split(int color, int key) override;

  MPI_Comm handle() const { return comm_; }
  std::shared_ptr<Watchdog> watchdog() const override;

 private:
  struct Shared;  // the store server (rank 0), store client and watchdog, shared by splits
  MpiCommunicator(MPI_Comm comm, std::string name, std::shared_ptr<Shared> shared);
  OpRecord begin(const char* op, size_t bytes);
  OpRecord begin_point_to_point(const char* op, size_t bytes, int peer);
  CommHandle started(std::vector<MPI_Request> requests, OpRecord op,
                     std::shared_ptr<void> keep_alive = nullptr);

  MPI_Comm comm_;
  MPI_Comm exchange_comm_;  // exchange_rows' messages never meet user send/recv tags
  int rank_ = 0, size_ = 1;
  std::string name_;
  std::vector<int> world_ranks_;
  std::shared_ptr<const std::vector<int>> members_;
  uint64_t seq_ = 0;
  int splits_ = 0;
  std::shared_ptr<Shared> shared_;
};

}  // namespace tandem::comm
