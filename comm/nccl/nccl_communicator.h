// The NCCL backend (NCCL 2.28): CUDA tensors, each communicator's operations enqueued on its own
// CUDA stream after the work the device's compute stream has queued (an event orders them); a
// handle completes when a CUDA event recorded after the operation has fired, and keeps the
// operation's tensors alive until then. The NCCL unique id travels over a bootstrap communicator
// (MPI or UCX), so any launcher works.
//
// One stream per communicator, as PyTorch's ProcessGroupNCCL does: the executor issues the
// operations of different groups in an order that differs between ranks (a forward micro-batch's
// all-to-all and a backward one's, interleaved by which is ready first; a gradient bucket's
// reduction and an expert exchange), and in one shared stream each rank's queue would then wait
// behind an operation its peer issues only later — a deadlock. In separate streams they progress
// side by side, which needs their kernels to fit on the GPU at once (NCCL's guide, "Using multiple
// NCCL communicators concurrently"): a handful of groups with NCCL's few blocks each do.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <memory>

#include "comm/communicator.h"
#include "comm/watchdog.h"

namespace tandem::comm {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap`'s group: one NCCL rank per member, on CUDA device `device`.
  static std::unique_ptr<NcclCommunicator> create(Communicator& bootstrap, int device,
                                                  int timeout_ms);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }
  std::shared_ptr<Watchdog> watchdog() const override { return watchdog_; }
  Device device() const override { return Device::cuda(device_); }

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
  // The ranks outside take part as NCCL_SPLIT_NOCOLOR.
  std::unique_ptr<Communicator> split_some(int color, int key) override;

  cudaStream_t stream() const { return stream_; }

 private:
  NcclCommunicator(ncclComm_t comm, int device, std::string name, std::vector<int> world_ranks,
                   std::shared_ptr<Watchdog> watchdog);
  OpRecord begin(const char* op, size_t bytes, bool collective);
  CommHandle finish(OpRecord op, std::vector<Tensor> buffers);

  ncclComm_t comm_ = nullptr;
  int device_ = 0;
  int rank_ = 0, size_ = 1;
  std::string name_;
  std::vector<int> world_ranks_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t compute_done_ = nullptr;  // recorded on the compute stream before each operation
  uint64_t seq_ = 0;
  std::shared_ptr<std::atomic<int64_t>> in_flight_ = std::make_shared<std::atomic<int64_t>>(0);
  int splits_ = 0;
  std::shared_ptr<Watchdog> watchdog_;
};

}  // namespace tandem::comm
