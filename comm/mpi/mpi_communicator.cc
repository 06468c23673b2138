// MPI backend: each call starts a non-blocking MPI operation and returns a watched handle.
#include "comm/mpi/mpi_communicator.h"

#include <unistd.h>

#include <cstring>

#include "comm/bootstrap.h"
#include "comm/mpi/mpi_check.h"
#include "comm/world.h"

namespace tandem::comm {

namespace detail {
std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, length);
}
}  // namespace detail

namespace {

// MPI is initialised once per process and finalised at exit, after every communicator is gone.
struct MpiSession {
  MpiSession() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      TANDEM_CHECK_MPI(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
      owns = true;
    }
    // Errors come back as codes (and become exceptions) instead of aborting the job.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ~MpiSession() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns && !finalized) MPI_Finalize();
  }
  bool owns = false;
};

MPI_Datatype reduction_type(DType dtype, const char* op) {
  switch (dtype) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kF64:
      return MPI_DOUBLE;
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI64:
      return MPI_INT64_T;
    default:
      TANDEM_FAIL(op, " on ", dtype_name(dtype),
                  " tensors is not supported: reduce in fp32, fp64, int32 or int64");
  }
}

MPI_Op mpi_op(ReduceOp op) {
  return op == ReduceOp::kSum ? MPI_SUM : (op == ReduceOp::kMax ? MPI_MAX : MPI_MIN);
}

int byte_count(size_t bytes, const char* op) {
  TANDEM_CHECK(bytes < (size_t{1} << 31), op, " of ", bytes,
               " bytes: messages of 2 GiB or more are not supported by the MPI backend yet");
  return static_cast<int>(bytes);
}

class MpiWork final : public Work {
 public:
  MpiWork(std::vector<MPI_Request> requests, OpRecord op, std::shared_ptr<Watchdog> watchdog,
          std::shared_ptr<void> keep_alive)
      : requests_(std::move(requests)),
        op_(std::move(op)),
        watchdog_(std::move(watchdog)),
        keep_alive_(std::move(keep_alive)) {}
  bool test() override {
    if (done_) return true;
    int flag = 0;
    TANDEM_CHECK_MPI(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag,
                                 MPI_STATUSES_IGNORE));
    done_ = flag != 0;
    if (done_) watchdog_->complete(op_);
    return done_;
  }
  void wait() override {
    if (!done_) watchdog_->wait([this] { return test(); }, op_);
  }
  std::string describe() const override { return describe_op(op_); }

 private:
  std::vector<MPI_Request> requests_;
  OpRecord op_;
  std::shared_ptr<Watchdog> watchdog_;
  std::shared_ptr<void> keep_alive_;  // counts and displacements MPI reads until completion
  bool done_ = false;
};

}  // namespace

struct MpiCommunicator::Shared {
  std::unique_ptr<StoreServer> server;
  std::shared_ptr<StoreClient> client;
  std::shared_ptr<Watchdog> watchdog;  // after the client: its heartbeat uses it
  ~Shared() {
    watchdog.reset();
    client.reset();
  }
};

std::unique_ptr<MpiCommunicator> MpiCommunicator::world(const WatchdogOptions& options) {
  static MpiSession session;
  int rank = 0, size = 1;
  TANDEM_CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  TANDEM_CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size));
  auto shared = std::make_shared<Shared>();
  if (size > 1) {
    // The store lives on world rank 0; its host name and port travel over MPI. When every rank
    // is on rank 0's node, they use the loopback address.
    const LaunchInfo& launch = detect_launch();
    int64_t node = node_identity_hash();
    int64_t nodes_alike = 0;
    int64_t first_node = node;
    TANDEM_CHECK_MPI(MPI_Bcast(&first_node, 1, MPI_INT64_T, 0, MPI_COMM_WORLD));
    int64_t here = node == first_node ? 1 : 0;
    TANDEM_CHECK_MPI(MPI_Allreduce(&here, &nodes_alike, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD));
    const bool one_node = nodes_alike == size;
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    TANDEM_CHECK_MPI(MPI_Bcast(host, sizeof host, MPI_CHAR, 0, MPI_COMM_WORLD));
    const std::string store_host = one_node ? "127.0.0.1" : std::string(host);
    int port = 0;
    if (rank == 0) {
      StoreOptions server_options;
      server_options.token = launch.store_token;
      shared->server =
          std::make_unique<StoreServer>(one_node ? "127.0.0.1" : "0.0.0.0", 0, server_options);
      port = shared->server->port();
    }
    TANDEM_CHECK_MPI(MPI_Bcast(&port, 1, MPI_INT, 0, MPI_COMM_WORLD));
    shared->client =
        std::make_shared<StoreClient>(store_host, port, job_store_options(launch, 30000, "rank 0"));
  }
  WatchdogOptions watchdog_options = options;
  watchdog_options.serves_store = shared->server != nullptr;
  shared->watchdog = std::make_shared<Watchdog>(shared->client, rank, watchdog_options);
  MPI_Comm comm;
  TANDEM_CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(comm, "world", std::move(shared)));
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name, std::shared_ptr<Shared> shared)
    : comm_(comm), name_(std::move(name)), shared_(std::move(shared)) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  TANDEM_CHECK_MPI(MPI_Comm_dup(comm_, &exchange_comm_));
  TANDEM_CHECK_MPI(MPI_Comm_rank(comm_, &rank_));
  TANDEM_CHECK_MPI(MPI_Comm_size(comm_, &size_));
  MPI_Group group, world_group;
  TANDEM_CHECK_MPI(MPI_Comm_group(comm_, &group));
  TANDEM_CHECK_MPI(MPI_Comm_group(MPI_COMM_WORLD, &world_group));
  std::vector<int> local(size_);
  for (int r = 0; r < size_; ++r) local[r] = r;
  world_ranks_.resize(size_);
  TANDEM_CHECK_MPI(
      MPI_Group_translate_ranks(group, size_, local.data(), world_group, world_ranks_.data()));
  MPI_Group_free(&group);
  MPI_Group_free(&world_group);
  members_ = std::make_shared<const std::vector<int>>(world_ranks_);
}

std::shared_ptr<Watchdog> MpiCommunicator::watchdog() const {
  return shared_->watchdog;
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) {
    MPI_Comm_free(&exchange_comm_);
    MPI_Comm_free(&comm_);
  }
}

OpRecord MpiCommunicator::begin(const char* op, size_t bytes) {
  OpRecord record;
  record.op = op;
  record.group = name_;
  record.seq = ++seq_;
  record.bytes = bytes;
  record.members = members_;
  shared_->watchdog->enter(record);
  return record;
}

OpRecord MpiCommunicator::begin_point_to_point(const char* op, size_t bytes, int peer) {
  OpRecord record;
  record.op = op;
  record.group = name_;
  record.bytes = bytes;
  record.members = std::make_shared<const std::vector<int>>(1, world_ranks_[peer]);
  shared_->watchdog->enter(record);
  return record;
}

CommHandle MpiCommunicator::started(std::vector<MPI_Request> requests, OpRecord op,
                                    std::shared_ptr<void> keep_alive) {
  return CommHandle(std::make_unique<MpiWork>(std::move(requests), std::move(op), shared_->watchdog,
                                              std::move(keep_alive)));
}

CommHandle MpiCommunicator::all_reduce(Tensor& tensor, ReduceOp op) {
  const MPI_Datatype type = reduction_type(tensor.dtype(), "all_reduce");
  OpRecord record = begin("all_reduce", tensor.nbytes());
  MPI_Request request;
  TANDEM_CHECK_MPI(MPI_Iallreduce(MPI_IN_PLACE, tensor.raw_data(),
                                  byte_count(tensor.numel(), "all_reduce"), type, mpi_op(op), comm_,
                                  &request));
  return started({request}, std::move(record));
}

CommHandle MpiCommunicator::reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) {
  TANDEM_CHECK(input.dtype() == output.dtype() && input.numel() == output.numel() * size_,
               "reduce_scatter: input of ", input.numel(), " elements for ", size_,
               " ranks must be ", size_, " x the output's ", output.numel());
  const MPI_Datatype type = reduction_type(input.dtype(), "reduce_scatter");
  OpRecord record = begin("reduce_scatter", input.nbytes());
  MPI_Request request;
  TANDEM_CHECK_MPI(MPI_Ireduce_scatter_block(input.raw_data(), output.raw_data(),
                                             byte_count(output.numel(), "reduce_scatter"), type,
                                             mpi_op(op), comm_, &request));
  return started({request}, std::move(record));
}

CommHandle MpiCommunicator::all_gather(const Tensor& input, Tensor& output) {
  TANDEM_CHECK(input.dtype() == output.dtype() && output.numel() == input.numel() * size_,
               "all_gather: output of ", output.numel(), " elements must be ", size_,
               " x the input's ", input.numel());
  OpRecord record = begin("all_gather", output.nbytes());
  const int bytes = byte_count(input.nbytes(), "all_gather");
  MPI_Request request;
  TANDEM_CHECK_MPI(MPI_Iallgather(input.raw_data(), bytes, MPI_BYTE, output.raw_data(), bytes,
                                  MPI_BYTE, comm_, &request));
  return started({request}, std::move(record));
}

CommHandle MpiCommunicator::broadcast(Tensor& tensor, int root) {
  TANDEM_CHECK(root >= 0 && root < size_, "broadcast from rank ", root, " in a group of ", size_);
  OpRecord record = begin("broadcast", tensor.nbytes());
  MPI_Request request;
  TANDEM_CHECK_MPI(MPI_Ibcast(tensor.raw_data(), byte_count(tensor.nbytes(), "broadcast"), MPI_BYTE,
                              root, comm_, &request));
  return started({request}, std::move(record));
}

CommHandle MpiCommunicator::all_to_all_v(const Tensor& send, const std::vector<int64_t>& send_rows,
                                         Tensor& recv, const std::vector<int64_t>& recv_rows) {
  const size_t row = check_all_to_all_v(send, send_rows, recv, recv_rows, size_);
  // Counts in bytes (int), displacements from the counts; kept alive until completion.
  auto counts = std::make_shared<std::vector<int>>(4 * size_);
  int* sc = counts->data();
  int* sd = sc + size_;
  int* rc = sd + size_;
  int* rd = rc + size_;
  size_t s_off = 0, r_off = 0;
  for (int p = 0; p < size_; ++p) {
    sc[p] = byte_count(send_rows[p] * row, "all_to_all_v");
    rc[p] = byte_count(recv_rows[p] * row, "all_to_all_v");
    sd[p] = byte_count(s_off, "all_to_all_v");
    rd[p] = byte_count(r_off, "all_to_all_v");
    s_off += sc[p];
    r_off += rc[p];
  }
  OpRecord record = begin("all_to_all_v", s_off + r_off);
  MPI_Request request;
  TANDEM_CHECK_MPI(MPI_Ialltoallv(send.raw_data(), sc, sd, MPI_BYTE, recv.raw_data(), rc, rd,
                                  MPI_BYTE, comm_, &request));
  return started({request}, std::move(record), counts);
}

CommHandle MpiCommunicator::exchange_rows(const Tensor& send, const std::vector<RowBlock>& sends,
                                          Tensor& recv, const std::vector<RowBlock>& recvs) {
  check_row_blocks(send, sends, recv, recvs, size_);
  const size_t row = std::max(row_bytes(send), row_bytes(recv));
  size_t total = 0;
  for (const auto* list : {&sends, &recvs})
    for (const RowBlock& b : *list) total += b.rows * row;
  OpRecord record = begin("exchange_rows", total);
  // The k-th non-empty block per peer is tag k; MPI's non-overtaking order keeps successive
  // exchanges apart.
  std::vector<MPI_Request> requests;
  std::vector<int> sent_to(size_, 0), received_from(size_, 0);
  for (const RowBlock& b : recvs) {
    if (b.rows == 0) continue;
    requests.emplace_back();
    TANDEM_CHECK_MPI(MPI_Irecv(static_cast<char*>(recv.raw_data()) + b.row * row,
                               byte_count(b.rows * row, "exchange_rows"), MPI_BYTE, b.peer,
                               received_from[b.peer]++, exchange_comm_, &requests.back()));
  }
  for (const RowBlock& b : sends) {
    if (b.rows == 0) continue;
    requests.emplace_back();
    TANDEM_CHECK_MPI(MPI_Isend(static_cast<const char*>(send.raw_data()) + b.row * row,
                               byte_count(b.rows * row, "exchange_rows"), MPI_BYTE, b.peer,
                               sent_to[b.peer]++, exchange_comm_, &requests.back()));
  }
  return started(std::move(requests), std::move(record));
}

CommHandle MpiCommunicator::send(const Tensor& tensor, int peer, int tag) {
  TANDEM_CHECK(peer >= 0 && peer < size_ && peer != rank_, "send to rank ", peer, " from ", rank_,
               " in a group of ", size_);
  OpRecord record = begin_point_to_point("send", tensor.nbytes(), peer);
  MPI_Request request;
  TANDEM_CHECK_MPI(MPI_Isend(tensor.raw_data(), byte_count(tensor.nbytes(), "send"), MPI_BYTE, peer,
                             tag, comm_, &request));
  return started({request}, std::move(record));
}

CommHandle MpiCommunicator::recv(Tensor& tensor, int peer, int tag) {
  TANDEM_CHECK(peer >= 0 && peer < size_ && peer != rank_, "recv from rank ", peer, " on ", rank_,
               " in a group of ", size_);
  OpRecord record = begin_point_to_point("recv", tensor.nbytes(), peer);
  MPI_Request request;
  TANDEM_CHECK_MPI(MPI_Irecv(tensor.raw_data(), byte_count(tensor.nbytes(), "recv"), MPI_BYTE, peer,
                             tag, comm_, &request));
  return started({request}, std::move(record));
}

CommHandle MpiCommunicator::barrier() {
  OpRecord record = begin("barrier", 0);
  MPI_Request request;
  TANDEM_CHECK_MPI(MPI_Ibarrier(comm_, &request));
  return started({request}, std::move(record));
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) {
  MPI_Comm comm;
  TANDEM_CHECK_MPI(MPI_Comm_split(comm_, color, key, &comm));
  const std::string name =
      name_ + "/split" + std::to_string(++splits_) + "(" + std::to_string(color) + ")";
  return std::unique_ptr<Communicator>(new MpiCommunicator(comm, name, shared_));
}

}  // namespace tandem::comm
