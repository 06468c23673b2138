// NCCL backend: collectives, grouped send/recv for all-to-all-v, split.
#include "comm/nccl/nccl_communicator.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "runtime/core/cuda/cuda_check.h"
#include "runtime/core/cuda/cuda_device.h"

#define TANDEM_CHECK_NCCL(call)                                                      \
  do {                                                                               \
    const ncclResult_t tandem_nccl_status_ = (call);                                 \
    if (tandem_nccl_status_ != ncclSuccess) [[unlikely]]                             \
      TANDEM_FAIL(#call, " failed: ", ncclGetErrorString(tandem_nccl_status_), " (", \
                  ncclGetLastError(nullptr), ")");                                   \
  } while (0)

namespace tandem::comm {

namespace {

ncclDataType_t nccl_type(DType dtype, const char* op) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kF64:
      return ncclFloat64;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF8E4M3:
      return ncclFloat8e4m3;
    case DType::kF8E5M2:
      return ncclFloat8e5m2;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
    case DType::kU8:
      return ncclUint8;
  }
  TANDEM_FAIL(op, ": no NCCL type for ", dtype_name(dtype));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  return op == ReduceOp::kSum ? ncclSum : (op == ReduceOp::kMax ? ncclMax : ncclMin);
}

void check_cuda_tensor(const Tensor& t, int device, const char* op) {
  TANDEM_CHECK(t.numel() == 0 || t.device() == Device::cuda(device), op,
               ": the NCCL backend needs ", Device::cuda(device).to_string(),
               " tensors, got one on ", t.device().to_string());
}

class NcclWork final : public Work {
 public:
  NcclWork(cudaEvent_t event, OpRecord op, std::shared_ptr<Watchdog> watchdog, ncclComm_t comm,
           std::vector<Tensor> buffers, std::shared_ptr<std::atomic<int64_t>> in_flight)
      : event_(event),
        op_(std::move(op)),
        watchdog_(std::move(watchdog)),
        comm_(comm),
        buffers_(std::move(buffers)),
        in_flight_(std::move(in_flight)) {
    ++*in_flight_;
  }
  ~NcclWork() override { cudaEventDestroy(event_); }
  bool test() override {
    if (done_) return true;
    const cudaError_t status = cudaEventQuery(event_);
    if (status == cudaErrorNotReady) {
      ncclResult_t async = ncclSuccess;
      TANDEM_CHECK_NCCL(ncclCommGetAsyncError(comm_, &async));
      TANDEM_CHECK_NCCL(async);
      return false;
    }
    TANDEM_CHECK_CUDA(status);
    done_ = true;
    --*in_flight_;
    buffers_.clear();  // the caching allocator may hand them to the compute stream again
    watchdog_->complete(op_);
    return true;
  }
  void wait() override {
    if (!done_) watchdog_->wait([this] { return test(); }, op_);
  }
  std::string describe() const override { return describe_op(op_); }

 private:
  cudaEvent_t event_;
  OpRecord op_;
  std::shared_ptr<Watchdog> watchdog_;
  ncclComm_t comm_;
  // The operation's tensors, kept alive until its event: their memory, freed on the compute
  // stream, would otherwise be reused there while NCCL still reads or writes it.
  std::vector<Tensor> buffers_;
  // The communicator's count of operations not seen complete (an abandoned one stays counted).
  std::shared_ptr<std::atomic<int64_t>> in_flight_;
  bool done_ = false;
};

}  // namespace

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(Communicator& bootstrap, int device,
                                                           int timeout_ms) {
  TANDEM_CHECK_CUDA(cudaSetDevice(device));
  ncclUniqueId id{};
  if (bootstrap.rank() == 0) TANDEM_CHECK_NCCL(ncclGetUniqueId(&id));
  Tensor bytes = Tensor::empty({static_cast<int64_t>(sizeof id)}, DType::kU8);
  std::memcpy(bytes.raw_data(), &id, sizeof id);
  bootstrap.broadcast(bytes, 0).wait();
  std::memcpy(&id, bytes.raw_data(), sizeof id);
  // Collectives connect their peers when a communicator is made, not on first use (NCCL's
  // default since 2.22, which blocks the host until every peer reaches the same operation): the
  // ranks issue operations of different groups in different orders. A value already set is kept.
  setenv("NCCL_RUNTIME_CONNECT", "0", /*overwrite=*/0);
  ncclComm_t comm;
  TANDEM_CHECK_NCCL(ncclCommInitRank(&comm, bootstrap.size(), id, bootstrap.rank()));
  // The bootstrap's watchdog, so NCCL's operations are in the same flight record.
  auto watchdog = bootstrap.watchdog();
  if (!watchdog) {
    WatchdogOptions options;
    options.timeout_ms = timeout_ms;
    watchdog =
        std::make_shared<Watchdog>(nullptr, bootstrap.world_ranks()[bootstrap.rank()], options);
  }
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(
      comm, device, bootstrap.name() + "/nccl", bootstrap.world_ranks(), watchdog));
}

NcclCommunicator::NcclCommunicator(ncclComm_t comm, int device, std::string name,
                                   std::vector<int> world_ranks, std::shared_ptr<Watchdog> watchdog)
    : comm_(comm),
      device_(device),
      name_(std::move(name)),
      world_ranks_(std::move(world_ranks)),
      watchdog_(std::move(watchdog)) {
  TANDEM_CHECK_NCCL(ncclCommUserRank(comm_, &rank_));
  TANDEM_CHECK_NCCL(ncclCommCount(comm_, &size_));
  TANDEM_CHECK_CUDA(cudaSetDevice(device_));
  TANDEM_CHECK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  TANDEM_CHECK_CUDA(cudaEventCreateWithFlags(&compute_done_, cudaEventDisableTiming));
}

NcclCommunicator::~NcclCommunicator() {
  if (*in_flight_ > 0) {
    // Left behind by an error (a receive whose peer is gone): waiting for the stream would hang
    // the exit that reports it, so the communicator is aborted instead.
    if (comm_) ncclCommAbort(comm_);
  } else {
    if (stream_) cudaStreamSynchronize(stream_);
    if (comm_) ncclCommDestroy(comm_);
  }
  if (stream_) cudaStreamDestroy(stream_);
  if (compute_done_) cudaEventDestroy(compute_done_);
}

OpRecord NcclCommunicator::begin(const char* op, size_t bytes, bool collective) {
  OpRecord record;
  record.op = op;
  record.group = name_;
  record.seq = collective ? ++seq_ : 0;
  record.bytes = bytes;
  if (collective) record.members = std::make_shared<const std::vector<int>>(world_ranks_);
  watchdog_->enter(record);
  // Communication after compute: this stream waits for what the compute stream has queued (the
  // kernels that wrote the buffers), on the device, without blocking the host.
  TANDEM_CHECK_CUDA(cudaEventRecord(compute_done_, tandem::cuda::compute_stream(device_).handle()));
  TANDEM_CHECK_CUDA(cudaStreamWaitEvent(stream_, compute_done_, 0));
  return record;
}

CommHandle NcclCommunicator::finish(OpRecord op, std::vector<Tensor> buffers) {
  cudaEvent_t event;
  TANDEM_CHECK_CUDA(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  TANDEM_CHECK_CUDA(cudaEventRecord(event, stream_));
  return CommHandle(std::make_unique<NcclWork>(event, std::move(op), watchdog_, comm_,
                                               std::move(buffers), in_flight_));
}

CommHandle NcclCommunicator::all_reduce(Tensor& tensor, ReduceOp op) {
  check_cuda_tensor(tensor, device_, "all_reduce");
  OpRecord record = begin("all_reduce", tensor.nbytes(), true);
  TANDEM_CHECK_NCCL(ncclAllReduce(tensor.raw_data(), tensor.raw_data(), tensor.numel(),
                                  nccl_type(tensor.dtype(), "all_reduce"), nccl_op(op), comm_,
                                  stream_));
  return finish(std::move(record), {tensor});
}

CommHandle NcclCommunicator::reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) {
  check_cuda_tensor(input, device_, "reduce_scatter");
  check_cuda_tensor(output, device_, "reduce_scatter");
  TANDEM_CHECK(input.dtype() == output.dtype() && input.numel() == output.numel() * size_,
               "reduce_scatter: input of ", input.numel(), " elements must be ", size_,
               " x the output's ", output.numel());
  OpRecord record = begin("reduce_scatter", input.nbytes(), true);
  TANDEM_CHECK_NCCL(ncclReduceScatter(input.raw_data(), output.raw_data(), output.numel(),
                                      nccl_type(input.dtype(), "reduce_scatter"), nccl_op(op),
                                      comm_, stream_));
  return finish(std::move(record), {input, output});
}

CommHandle NcclCommunicator::all_gather(const Tensor& input, Tensor& output) {
  check_cuda_tensor(input, device_, "all_gather");
  check_cuda_tensor(output, device_, "all_gather");
  TANDEM_CHECK(input.dtype() == output.dtype() && output.numel() == input.numel() * size_,
               "all_gather: output of ", output.numel(), " elements must be ", size_,
               " x the input's ", input.numel());
  OpRecord record = begin("all_gather", output.nbytes(), true);
  TANDEM_CHECK_NCCL(ncclAllGather(input.raw_data(), output.raw_data(), input.nbytes(), ncclUint8,
                                  comm_, stream_));
  return finish(std::move(record), {input, output});
}

CommHandle NcclCommunicator::broadcast(Tensor& tensor, int root) {
  check_cuda_tensor(tensor, device_, "broadcast");
  OpRecord record = begin("broadcast", tensor.nbytes(), true);
  TANDEM_CHECK_NCCL(ncclBroadcast(tensor.raw_data(), tensor.raw_data(), tensor.nbytes(), ncclUint8,
                                  root, comm_, stream_));
  return finish(std::move(record), {tensor});
}

CommHandle NcclCommunicator::all_to_all_v(const Tensor& send, const std::vector<int64_t>& send_rows,
                                          Tensor& recv, const std::vector<int64_t>& recv_rows) {
  check_cuda_tensor(send, device_, "all_to_all_v");
  check_cuda_tensor(recv, device_, "all_to_all_v");
  const size_t row = check_all_to_all_v(send, send_rows, recv, recv_rows, size_);
  size_t s_off = 0, r_off = 0;
  for (int p = 0; p < size_; ++p) s_off += send_rows[p] * row, r_off += recv_rows[p] * row;
  OpRecord record = begin("all_to_all_v", s_off + r_off, true);
  s_off = r_off = 0;
  TANDEM_CHECK_NCCL(ncclGroupStart());
  for (int p = 0; p < size_; ++p) {
    const size_t out = send_rows[p] * row, in = recv_rows[p] * row;
    if (out)
      TANDEM_CHECK_NCCL(ncclSend(static_cast<const char*>(send.raw_data()) + s_off, out, ncclUint8,
                                 p, comm_, stream_));
    if (in)
      TANDEM_CHECK_NCCL(
          ncclRecv(static_cast<char*>(recv.raw_data()) + r_off, in, ncclUint8, p, comm_, stream_));
    s_off += out;
    r_off += in;
  }
  TANDEM_CHECK_NCCL(ncclGroupEnd());
  return finish(std::move(record), {send, recv});
}

CommHandle NcclCommunicator::exchange_rows(const Tensor& send, const std::vector<RowBlock>& sends,
                                           Tensor& recv, const std::vector<RowBlock>& recvs) {
  check_cuda_tensor(send, device_, "exchange_rows");
  check_cuda_tensor(recv, device_, "exchange_rows");
  check_row_blocks(send, sends, recv, recvs, size_);
  const size_t row = std::max(row_bytes(send), row_bytes(recv));
  size_t total = 0;
  for (const auto* list : {&sends, &recvs})
    for (const RowBlock& b : *list) total += b.rows * row;
  OpRecord record = begin("exchange_rows", total, true);
  // Inside one group, NCCL matches sends and receives per peer in posting order.
  TANDEM_CHECK_NCCL(ncclGroupStart());
  for (const RowBlock& b : recvs)
    if (b.rows)
      TANDEM_CHECK_NCCL(ncclRecv(static_cast<char*>(recv.raw_data()) + b.row * row, b.rows * row,
                                 ncclUint8, b.peer, comm_, stream_));
  for (const RowBlock& b : sends)
    if (b.rows)
      TANDEM_CHECK_NCCL(ncclSend(static_cast<const char*>(send.raw_data()) + b.row * row,
                                 b.rows * row, ncclUint8, b.peer, comm_, stream_));
  TANDEM_CHECK_NCCL(ncclGroupEnd());
  return finish(std::move(record), {send, recv});
}

CommHandle NcclCommunicator::send(const Tensor& tensor, int peer, int tag) {
  (void)tag;  // NCCL matches point-to-point in posting order per peer
  check_cuda_tensor(tensor, device_, "send");
  OpRecord record = begin("send", tensor.nbytes(), false);
  TANDEM_CHECK_NCCL(ncclSend(tensor.raw_data(), tensor.nbytes(), ncclUint8, peer, comm_, stream_));
  return finish(std::move(record), {tensor});
}

CommHandle NcclCommunicator::recv(Tensor& tensor, int peer, int tag) {
  (void)tag;
  check_cuda_tensor(tensor, device_, "recv");
  OpRecord record = begin("recv", tensor.nbytes(), false);
  TANDEM_CHECK_NCCL(ncclRecv(tensor.raw_data(), tensor.nbytes(), ncclUint8, peer, comm_, stream_));
  return finish(std::move(record), {tensor});
}

CommHandle NcclCommunicator::barrier() {
  Tensor token = Tensor::zeros({1}, DType::kF32).to(Device::cuda(device_));
  OpRecord record = begin("barrier", 0, true);
  TANDEM_CHECK_NCCL(
      ncclAllReduce(token.raw_data(), token.raw_data(), 1, ncclFloat32, ncclSum, comm_, stream_));
  CommHandle handle = finish(std::move(record), {token});
  handle.wait();  // the token must outlive the operation
  return handle;
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key) {
  TANDEM_CHECK(color >= 0, "split on ", name_, ": color ", color, " must be non-negative");
  return split_some(color, key);
}

std::unique_ptr<Communicator> NcclCommunicator::split_some(int color, int key) {
  ncclComm_t comm = nullptr;
  TANDEM_CHECK_NCCL(
      ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &comm, nullptr));
  // World ranks of the new group: gather (color, key, world rank) on the parent over NCCL would
  // need device buffers; the members are recomputed from an all-gather on a host copy instead.
  Tensor mine = Tensor::empty({3}, DType::kI64);
  mine.data<int64_t>()[0] = color;
  mine.data<int64_t>()[1] = key;
  mine.data<int64_t>()[2] = world_ranks_[rank_];
  Tensor device_mine = mine.to(Device::cuda(device_));
  Tensor device_all = Tensor::empty({3 * size_}, DType::kI64, Device::cuda(device_));
  all_gather(device_mine, device_all).wait();
  if (color < 0) {
    TANDEM_CHECK(comm == nullptr, "ncclCommSplit gave a communicator to a rank that stayed out");
    return nullptr;
  }
  TANDEM_CHECK(comm != nullptr, "ncclCommSplit gave no communicator for color ", color);
  int new_rank = 0, new_size = 0;
  TANDEM_CHECK_NCCL(ncclCommUserRank(comm, &new_rank));
  TANDEM_CHECK_NCCL(ncclCommCount(comm, &new_size));
  const Tensor all = device_all.to(Device::cpu());
  std::vector<std::tuple<int64_t, int, int>> members;
  for (int p = 0; p < size_; ++p) {
    const int64_t* v = all.data<int64_t>() + 3 * p;
    if (v[0] == color) members.emplace_back(v[1], p, static_cast<int>(v[2]));
  }
  std::sort(members.begin(), members.end());
  std::vector<int> world;
  for (const auto& m : members) world.push_back(std::get<2>(m));
  TANDEM_CHECK(static_cast<int>(world.size()) == new_size, "ncclCommSplit: ", new_size,
               " ranks in the new group, ", world.size(), " expected");
  return std::unique_ptr<Communicator>(new NcclCommunicator(
      comm, device_,
      name_ + "/split" + std::to_string(++splits_) + "(" + std::to_string(color) + ")", world,
      watchdog_));
}

}  // namespace tandem::comm
