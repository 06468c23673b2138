// Handle lifetime rules.
#include "comm/communicator.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>

namespace tandem::comm {

CommHandle& CommHandle::operator=(CommHandle&& other) {
  if (this != &other) {
    // test() may throw the old operation's failure: it then reaches the one assigning.
    TANDEM_CHECK(!work_ || test(), "assigning over the unfinished ", work_->describe(),
                 ": wait() on it (or test() until true) before reusing its handle");
    work_ = std::move(other.work_);
  }
  return *this;
}

CommHandle::~CommHandle() {
  if (!work_) return;
  if (std::uncaught_exceptions() > 0) {
    // An error is on its way out: waiting here for a peer that may never come would stall the
    // report by a whole watchdog timeout per pending operation.
    abandon();
    return;
  }
  std::string failure;
  try {
    if (work_->test()) return;
    failure = "destroyed the handle of the unfinished " + work_->describe() +
              " without waiting on it: its buffers could be freed under the transport";
  } catch (const std::exception& error) {
    failure = "destroyed the handle of " + work_->describe() +
              " without waiting on it, and the operation failed: " + error.what();
  }
  std::fprintf(stderr, "tandem: fatal: %s\n", failure.c_str());
  std::fflush(nullptr);
  std::abort();
}

void CommHandle::abandon() {
  // Leaked deliberately: the operation's buffers stay valid for a transport that may still write
  // them; the process is reporting an error and will end.
  work_->abandon();
  static_cast<void>(work_.release());
}

void CommHandle::wait() {
  if (!work_) return;
  try {
    work_->wait();
  } catch (...) {
    abandon();
    throw;
  }
  work_.reset();
}

bool CommHandle::test() {
  if (!work_) return true;
  try {
    if (!work_->test()) return false;
  } catch (...) {
    abandon();
    throw;
  }
  work_.reset();
  return true;
}

namespace {
template <class T>
void reduce_typed(T* out, const T* a, const T* b, int64_t n, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
      return;
    case ReduceOp::kMax:
      for (int64_t i = 0; i < n; ++i) out[i] = std::max(a[i], b[i]);
      return;
    case ReduceOp::kMin:
      for (int64_t i = 0; i < n; ++i) out[i] = std::min(a[i], b[i]);
      return;
  }
}
}  // namespace

void reduce_elements(DType dtype, void* out, const void* a, const void* b, int64_t n, ReduceOp op) {
  switch (dtype) {
    case DType::kF32:
      return reduce_typed(static_cast<float*>(out), static_cast<const float*>(a),
                          static_cast<const float*>(b), n, op);
    case DType::kF64:
      return reduce_typed(static_cast<double*>(out), static_cast<const double*>(a),
                          static_cast<const double*>(b), n, op);
    case DType::kI32:
      return reduce_typed(static_cast<int32_t*>(out), static_cast<const int32_t*>(a),
                          static_cast<const int32_t*>(b), n, op);
    case DType::kI64:
      return reduce_typed(static_cast<int64_t*>(out), static_cast<const int64_t*>(a),
                          static_cast<const int64_t*>(b), n, op);
    default:
      TANDEM_FAIL("reductions need fp32, fp64, int32 or int64, not ", dtype_name(dtype));
  }
}

double all_reduce_value(Communicator& group, double value, ReduceOp op) {
  Tensor t = Tensor::empty({1}, DType::kF64);
  t.data<double>()[0] = value;
  group.all_reduce(t, op).wait();
  return t.data<double>()[0];
}

std::vector<std::string> gather_strings(Communicator& group, const std::string& mine, int root) {
  Tensor length = Tensor::empty({1}, DType::kI64);
  Tensor lengths = Tensor::empty({group.size()}, DType::kI64);
  length.data<int64_t>()[0] = static_cast<int64_t>(mine.size());
  group.all_gather(length, lengths).wait();
  // A fixed tag is safe: every gather on a group is collective, so they come in the same order.
  constexpr int kTag = 0x7a11;
  if (group.rank() != root) {
    Tensor bytes = Tensor::empty({static_cast<int64_t>(mine.size())}, DType::kU8);
    std::copy(mine.begin(), mine.end(), bytes.data<uint8_t>());
    if (!mine.empty()) group.send(bytes, root, kTag).wait();
    return {};
  }
  std::vector<std::string> all(group.size());
  for (int r = 0; r < group.size(); ++r) {
    if (r == root) {
      all[r] = mine;
      continue;
    }
    Tensor bytes = Tensor::empty({lengths.data<int64_t>()[r]}, DType::kU8);
    if (bytes.numel() > 0) group.recv(bytes, r, kTag).wait();
    all[r].assign(reinterpret_cast<const char*>(bytes.data<uint8_t>()), bytes.numel());
  }
  return all;
}

size_t row_bytes(const Tensor& tensor) {
  return tensor.ndim() == 0 || tensor.dim(0) == 0
             ? 0
             : tensor.nbytes() / static_cast<size_t>(tensor.dim(0));
}

size_t check_all_to_all_v(const Tensor& send, const std::vector<int64_t>& send_rows,
                          const Tensor& recv, const std::vector<int64_t>& recv_rows,
                          int group_size) {
  TANDEM_CHECK(static_cast<int>(send_rows.size()) == group_size &&
                   static_cast<int>(recv_rows.size()) == group_size,
               "all_to_all_v needs one row count per rank (", group_size, ")");
  TANDEM_CHECK(send.dtype() == recv.dtype(), "all_to_all_v: send is ", dtype_name(send.dtype()),
               ", recv is ", dtype_name(recv.dtype()));
  int64_t send_total = 0, recv_total = 0;
  for (int p = 0; p < group_size; ++p) send_total += send_rows[p], recv_total += recv_rows[p];
  const int64_t send_extent = send.ndim() ? send.dim(0) : 0;
  const int64_t recv_extent = recv.ndim() ? recv.dim(0) : 0;
  TANDEM_CHECK(send_total == send_extent && recv_total == recv_extent,
               "all_to_all_v: counts add up to ", send_total, " rows sent and ", recv_total,
               " received, but the tensors have ", send_extent, " and ", recv_extent);
  TANDEM_CHECK(send_total == 0 || recv_total == 0 || row_bytes(send) == row_bytes(recv),
               "all_to_all_v: rows of ", row_bytes(send), " and ", row_bytes(recv), " bytes");
  return std::max(row_bytes(send), row_bytes(recv));
}

void check_row_blocks(const Tensor& send, const std::vector<RowBlock>& sends, const Tensor& recv,
                      const std::vector<RowBlock>& recvs, int group_size) {
  TANDEM_CHECK(send.dtype() == recv.dtype(), "exchange_rows: send is ", dtype_name(send.dtype()),
               ", recv is ", dtype_name(recv.dtype()));
  TANDEM_CHECK(row_bytes(send) == 0 || row_bytes(recv) == 0 || row_bytes(send) == row_bytes(recv),
               "exchange_rows: rows of ", row_bytes(send), " and ", row_bytes(recv), " bytes");
  for (const auto* list : {&sends, &recvs})
    for (const RowBlock& b : *list) {
      const Tensor& t = list == &sends ? send : recv;
      TANDEM_CHECK(b.peer >= 0 && b.peer < group_size && b.row >= 0 && b.rows >= 0 &&
                       b.row + b.rows <= (t.ndim() ? t.dim(0) : 0),
                   "exchange_rows: block of rows [", b.row, ", ", b.row + b.rows, ") with rank ",
                   b.peer, " outside a tensor of ", t.ndim() ? t.dim(0) : 0, " rows in a group of ",
                   group_size);
    }
}

std::unique_ptr<Communicator> Communicator::split_some(int color, int key) {
  TANDEM_CHECK(color < size(), "split_some on ", name(), ": color ", color, " must be below ",
               size(), " (the colors above are the ranks staying out)");
  std::unique_ptr<Communicator> group = split(color < 0 ? size() + rank() : color, key);
  if (color < 0) group.reset();
  return group;
}

void connect_peers(Communicator& group) {
  const std::vector<int64_t> ones(group.size(), 1);
  const Tensor send = Tensor::zeros({group.size()}, DType::kU8, group.device());
  Tensor recv = Tensor::empty({group.size()}, DType::kU8, group.device());
  group.all_to_all_v(send, ones, recv, ones).wait();
}

}  // namespace tandem::comm
