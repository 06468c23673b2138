// Collectives over tagged point-to-point messages.
#include "comm/p2p_collectives.h"

#include <cstring>

namespace tandem::comm {

namespace {

class P2PWork final : public Work {
 public:
  P2PWork(std::vector<std::unique_ptr<P2PRequest>> requests, std::function<void()> finish,
          std::shared_ptr<void> keep_alive, OpRecord op, std::shared_ptr<Watchdog> watchdog)
      : requests_(std::move(requests)),
        finish_(std::move(finish)),
        keep_alive_(std::move(keep_alive)),
        op_(std::move(op)),
        watchdog_(std::move(watchdog)) {}
  bool test() override {
    if (done_) return true;
    for (auto& request : requests_)
      if (request && !request->test()) return false;
    requests_.clear();
    if (finish_) finish_();
    done_ = true;
    return true;
  }
  void wait() override {
    if (!done_) watchdog_->wait([this] { return test(); }, op_);
  }

 private:
  std::vector<std::unique_ptr<P2PRequest>> requests_;
  std::function<void()> finish_;
  std::shared_ptr<void> keep_alive_;
  OpRecord op_;
  std::shared_ptr<Watchdog> watchdog_;
  bool done_ = false;
};

template <class T>
void reduce_into(T* out, const T* in, int64_t n, ReduceOp op) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = op == ReduceOp::kSum
                 ? out[i] + in[i]
                 : (op == ReduceOp::kMax ? std::max(out[i], in[i]) : std::min(out[i], in[i]));
}

void reduce_bytes(DType dtype, void* out, const void* in, int64_t n, ReduceOp op) {
  switch (dtype) {
    case DType::kF32:
      return reduce_into(static_cast<float*>(out), static_cast<const float*>(in), n, op);
    case DType::kF64:
      return reduce_into(static_cast<double*>(out), static_cast<const double*>(in), n, op);
    case DType::kI32:
      return reduce_into(static_cast<int32_t*>(out), static_cast<const int32_t*>(in), n, op);
    case DType::kI64:
      return reduce_into(static_cast<int64_t*>(out), static_cast<const int64_t*>(in), n, op);
    default:
      TANDEM_FAIL("unreachable");
  }
}

void check_reducible(DType dtype, const char* op) {
  TANDEM_CHECK(
      dtype == DType::kF32 || dtype == DType::kF64 || dtype == DType::kI32 || dtype == DType::kI64,
      op, " on ", dtype_name(dtype),
      " tensors is not supported: reduce in fp32, fp64, int32 or int64");
}

}  // namespace

P2PCommunicator::P2PCommunicator(std::string name, int rank, std::vector<int> world_ranks,
                                 uint16_t group_id, std::shared_ptr<Watchdog> watchdog)
    : name_(std::move(name)),
      rank_(rank),
      world_ranks_(std::move(world_ranks)),
      group_id_(group_id),
      watchdog_(std::move(watchdog)) {}

uint64_t P2PCommunicator::make_tag(bool collective, uint64_t seq_or_tag, int source) const {
  return (static_cast<uint64_t>(group_id_) << 48) | (static_cast<uint64_t>(collective) << 47) |
         ((seq_or_tag & 0x7fffffffull) << 16) | static_cast<uint64_t>(source & 0xffff);
}

CommHandle P2PCommunicator::launch(const char* op, size_t bytes, bool collective,
                                   std::vector<std::unique_ptr<P2PRequest>> requests,
                                   std::function<void()> finish, std::shared_ptr<void> keep_alive) {
  OpRecord record{op, name_, collective ? seq_ : 0, bytes,
                  collective ? world_ranks_ : std::vector<int>{}};
  return CommHandle(std::make_unique<P2PWork>(std::move(requests), std::move(finish),
                                              std::move(keep_alive), std::move(record), watchdog_));
}

CommHandle P2PCommunicator::all_gather(const Tensor& input, Tensor& output) {
  const int n = size();
  TANDEM_CHECK(input.dtype() == output.dtype() && output.numel() == input.numel() * n,
               "all_gather: output of ", output.numel(), " elements must be ", n, " x the input's ",
               input.numel());
  const uint64_t seq = next_collective();
  watchdog_->enter({"all_gather", name_, seq, output.nbytes(), world_ranks_});
  const size_t block = input.nbytes();
  char* out = static_cast<char*>(output.raw_data());
  if (block) std::memcpy(out + rank_ * block, input.raw_data(), block);
  std::vector<std::unique_ptr<P2PRequest>> requests;
  for (int p = 0; p < n; ++p) {
    if (p == rank_) continue;
    requests.push_back(post_recv(out + p * block, block, p, make_tag(true, seq, p)));
    requests.push_back(post_send(input.raw_data(), block, p, make_tag(true, seq, rank_)));
  }
  return launch("all_gather", output.nbytes(), true, std::move(requests));
}

// all_reduce and reduce_scatter alike: every peer p sends this rank the block it holds for it
// (source + p·stride of its buffer), and the blocks are reduced into target in rank order, so
// every rank gets identical bits.
CommHandle P2PCommunicator::gather_and_reduce(const char* op_name, size_t op_bytes, Tensor target,
                                              const char* source, size_t stride, ReduceOp op) {
  const int n = size();
  const size_t block = target.nbytes();
  auto gathered = std::make_shared<Tensor>(Tensor::empty({n, target.numel()}, target.dtype()));
  const uint64_t seq = next_collective();
  watchdog_->enter({op_name, name_, seq, op_bytes, world_ranks_});
  char* all = static_cast<char*>(gathered->raw_data());
  if (block) std::memcpy(all + rank_ * block, source + rank_ * stride, block);
  std::vector<std::unique_ptr<P2PRequest>> requests;
  for (int p = 0; p < n; ++p) {
    if (p == rank_) continue;
    requests.push_back(post_recv(all + p * block, block, p, make_tag(true, seq, p)));
    requests.push_back(post_send(source + p * stride, block, p, make_tag(true, seq, rank_)));
  }
  auto finish = [target, gathered, n, op, block]() mutable {
    const char* all = static_cast<const char*>(gathered->raw_data());
    if (block) std::memcpy(target.raw_data(), all, block);
    for (int p = 1; p < n; ++p)
      reduce_bytes(target.dtype(), target.raw_data(), all + p * block, target.numel(), op);
  };
  return launch(op_name, op_bytes, true, std::move(requests), finish, gathered);
}

CommHandle P2PCommunicator::all_reduce(Tensor& tensor, ReduceOp op) {
  check_reducible(tensor.dtype(), "all_reduce");
  // Every peer gets the whole tensor (stride 0); the sum lands back in place.
  return gather_and_reduce("all_reduce", tensor.nbytes(), tensor,
                           static_cast<const char*>(tensor.raw_data()), 0, op);
}

CommHandle P2PCommunicator::reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) {
  check_reducible(input.dtype(), "reduce_scatter");
  const int n = size();
  TANDEM_CHECK(input.dtype() == output.dtype() && input.numel() == output.numel() * n,
               "reduce_scatter: input of ", input.numel(), " elements for ", n, " ranks must be ",
               n, " x the output's ", output.numel());
  return gather_and_reduce("reduce_scatter", input.nbytes(), output,
                           static_cast<const char*>(input.raw_data()), output.nbytes(), op);
}

CommHandle P2PCommunicator::broadcast(Tensor& tensor, int root) {
  const int n = size();
  TANDEM_CHECK(root >= 0 && root < n, "broadcast from rank ", root, " in a group of ", n);
  const uint64_t seq = next_collective();
  watchdog_->enter({"broadcast", name_, seq, tensor.nbytes(), world_ranks_});
  std::vector<std::unique_ptr<P2PRequest>> requests;
  if (rank_ == root) {
    for (int p = 0; p < n; ++p)
      if (p != root)
        requests.push_back(
            post_send(tensor.raw_data(), tensor.nbytes(), p, make_tag(true, seq, root)));
  } else {
    requests.push_back(
        post_recv(tensor.raw_data(), tensor.nbytes(), root, make_tag(true, seq, root)));
  }
  return launch("broadcast", tensor.nbytes(), true, std::move(requests));
}

CommHandle P2PCommunicator::all_to_all_v(const Tensor& send, const std::vector<int64_t>& send_rows,
                                         Tensor& recv, const std::vector<int64_t>& recv_rows) {
  const int n = size();
  const size_t row = check_all_to_all_v(send, send_rows, recv, recv_rows, n);
  int64_t send_total = 0, recv_total = 0;
  for (int p = 0; p < n; ++p) send_total += send_rows[p], recv_total += recv_rows[p];
  const uint64_t seq = next_collective();
  watchdog_->enter({"all_to_all_v", name_, seq, (send_total + recv_total) * row, world_ranks_});
  const char* s = static_cast<const char*>(send.raw_data());
  char* r = static_cast<char*>(recv.raw_data());
  std::vector<std::unique_ptr<P2PRequest>> requests;
  size_t s_off = 0, r_off = 0;
  for (int p = 0; p < n; ++p) {
    const size_t out_bytes = send_rows[p] * row, in_bytes = recv_rows[p] * row;
    if (p == rank_) {
      TANDEM_CHECK(out_bytes == in_bytes, "all_to_all_v: rank ", rank_, " sends itself ",
                   send_rows[p], " rows but expects ", recv_rows[p]);
      if (out_bytes) std::memcpy(r + r_off, s + s_off, out_bytes);
    } else {
      requests.push_back(post_recv(r + r_off, in_bytes, p, make_tag(true, seq, p)));
      requests.push_back(post_send(s + s_off, out_bytes, p, make_tag(true, seq, rank_)));
    }
    s_off += out_bytes;
    r_off += in_bytes;
  }
  return launch("all_to_all_v", s_off + r_off, true, std::move(requests));
}

CommHandle P2PCommunicator::exchange_rows(const Tensor& send, const std::vector<RowBlock>& sends,
                                          Tensor& recv, const std::vector<RowBlock>& recvs) {
  check_row_blocks(send, sends, recv, recvs, size());
  const size_t row = std::max(row_bytes(send), row_bytes(recv));
  size_t total = 0;
  for (const auto* list : {&sends, &recvs})
    for (const RowBlock& b : *list) total += b.rows * row;
  const uint64_t seq = next_collective();
  watchdog_->enter({"exchange_rows", name_, seq, total, world_ranks_});
  // Tag field: 20 bits of sequence, 11 bits of block index per peer.
  auto tag = [&](uint64_t k, int source) {
    TANDEM_CHECK(k < 2048, "exchange_rows: more than 2048 blocks with one peer");
    return make_tag(true, ((seq & 0xfffff) << 11) | k, source);
  };
  std::vector<int> sent_to(size(), 0), received_from(size(), 0);
  std::vector<std::unique_ptr<P2PRequest>> requests;
  for (const RowBlock& b : recvs) {
    if (b.rows == 0) continue;
    char* target = static_cast<char*>(recv.raw_data()) + b.row * row;
    if (b.peer == rank_) continue;  // filled by the matching local block below
    requests.push_back(
        post_recv(target, b.rows * row, b.peer, tag(received_from[b.peer]++, b.peer)));
  }
  std::vector<const RowBlock*> to_self;
  for (const RowBlock& b : recvs)
    if (b.rows && b.peer == rank_) to_self.push_back(&b);
  size_t self_index = 0;
  for (const RowBlock& b : sends) {
    if (b.rows == 0) continue;
    const char* source = static_cast<const char*>(send.raw_data()) + b.row * row;
    if (b.peer == rank_) {
      TANDEM_CHECK(self_index < to_self.size() && to_self[self_index]->rows == b.rows,
                   "exchange_rows: blocks to and from this rank do not match");
      std::memcpy(static_cast<char*>(recv.raw_data()) + to_self[self_index++]->row * row, source,
                  b.rows * row);
      continue;
    }
    requests.push_back(post_send(source, b.rows * row, b.peer, tag(sent_to[b.peer]++, rank_)));
  }
  return launch("exchange_rows", total, true, std::move(requests));
}

CommHandle P2PCommunicator::send(const Tensor& tensor, int peer, int tag) {
  TANDEM_CHECK(peer >= 0 && peer < size() && peer != rank_, "send to rank ", peer, " from ", rank_,
               " in a group of ", size());
  std::vector<std::unique_ptr<P2PRequest>> requests;
  requests.push_back(
      post_send(tensor.raw_data(), tensor.nbytes(), peer, make_tag(false, tag, rank_)));
  return launch("send", tensor.nbytes(), false, std::move(requests));
}

CommHandle P2PCommunicator::recv(Tensor& tensor, int peer, int tag) {
  TANDEM_CHECK(peer >= 0 && peer < size() && peer != rank_, "recv from rank ", peer, " on ", rank_,
               " in a group of ", size());
  std::vector<std::unique_ptr<P2PRequest>> requests;
  requests.push_back(
      post_recv(tensor.raw_data(), tensor.nbytes(), peer, make_tag(false, tag, peer)));
  return launch("recv", tensor.nbytes(), false, std::move(requests));
}

CommHandle P2PCommunicator::barrier() {
  Tensor token = Tensor::zeros({1}, DType::kU8);
  auto all = std::make_shared<Tensor>(Tensor::empty({size()}, DType::kU8));
  const uint64_t seq = next_collective();
  watchdog_->enter({"barrier", name_, seq, 0, world_ranks_});
  std::vector<std::unique_ptr<P2PRequest>> requests;
  auto keep = std::make_shared<std::pair<Tensor, std::shared_ptr<Tensor>>>(token, all);
  for (int p = 0; p < size(); ++p) {
    if (p == rank_) continue;
    requests.push_back(post_recv(all->data<uint8_t>() + p, 1, p, make_tag(true, seq, p)));
    requests.push_back(post_send(token.raw_data(), 1, p, make_tag(true, seq, rank_)));
  }
  return launch("barrier", 0, true, std::move(requests), {}, keep);
}

}  // namespace tandem::comm
