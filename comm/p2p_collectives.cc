// Collectives over tagged point-to-point messages: the tag layout, the watched operation, the
// chunked ring, and the one-round exchanges (small all-reduce, broadcast, all-to-all, rows).
#include "comm/p2p_collectives.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <tuple>

#include "comm/faults.h"

namespace tandem::comm {

uint64_t TagLayout::collective(uint64_t group_id, Collective which, uint64_t seq, uint64_t part,
                               int source) {
  TANDEM_CHECK(part < kMaxParts, "message part ", part, " outside the tag's ", kMaxParts);
  return (group_id << 48) | (uint64_t{1} << 47) | ((seq % kSequenceModulus) << 34) |
         (static_cast<uint64_t>(which) << 31) | (part << 16) |
         (static_cast<uint64_t>(source) & 0xffff);
}

uint64_t TagLayout::user(uint64_t group_id, int64_t tag, int source) {
  return (group_id << 48) | (static_cast<uint64_t>(tag) << 16) |
         (static_cast<uint64_t>(source) & 0xffff);
}

namespace {

void check_reducible(DType dtype, const char* op) {
  TANDEM_CHECK(
      dtype == DType::kF32 || dtype == DType::kF64 || dtype == DType::kI32 || dtype == DType::kI64,
      op, " on ", dtype_name(dtype),
      " tensors is not supported: reduce in fp32, fp64, int32 or int64");
}

constexpr auto kAllReduce = TagLayout::Collective::kAllReduce;
constexpr auto kAllToAll = TagLayout::Collective::kAllToAll;
constexpr auto kBarrier = TagLayout::Collective::kBarrier;

int mod(int64_t a, int n) {
  return static_cast<int>(((a % n) + n) % n);
}

}  // namespace

// What every P2P operation shares: the watchdog's deadline on wait(), its record marked complete
// once, the group's count of collectives in flight, and the backend's list of operations that any
// test() advances. All of it comes from the communicator that started the operation.
class P2PCommunicator::WatchedWork : public Work {
 public:
  WatchedWork(const P2PCommunicator& comm, OpRecord op)
      : op_(std::move(op)),
        watchdog_(comm.watchdog_),
        in_flight_(op_.seq > 0 ? comm.in_flight_ : nullptr),
        progress_(comm.progress_engine()),
        active_(comm.active_works()) {
    active_->works.push_back(this);
  }
  ~WatchedWork() override {
    if (!done_ && in_flight_) --*in_flight_;
    std::erase(active_->works, this);
  }
  bool test() final {
    if (done_) return true;
    progress_();
    // Every operation in flight on this backend moves on, whichever one is being waited for:
    // ranks may wait on them in different orders, and each needs the others' messages.
    if (!active_->advancing) {
      active_->advancing = true;
      for (size_t i = 0; i < active_->works.size(); ++i) active_->works[i]->step();
      active_->advancing = false;
    } else {
      step();
    }
    if (failure_) std::rethrow_exception(std::exchange(failure_, nullptr));
    return done_;
  }
  void wait() final {
    if (!done_) watchdog_->wait([this] { return test(); }, op_);
  }
  std::string describe() const final { return describe_op(op_); }
  void abandon() final { abandoned_ = true; }

 protected:
  // True once every message of the operation has completed and its local work is done.
  virtual bool advance() = 0;
  const OpRecord& op() const { return op_; }

 private:
  // Advances this operation; its failure is kept for whoever tests it.
  void step() {
    if (done_ || abandoned_ || failure_) return;
    try {
      if (!advance()) return;
    } catch (...) {
      failure_ = std::current_exception();
      abandoned_ = true;
      return;
    }
    done_ = true;
    watchdog_->complete(op_);
    if (in_flight_) --*in_flight_;
  }
  OpRecord op_;
  std::shared_ptr<Watchdog> watchdog_;
  std::shared_ptr<std::atomic<int64_t>> in_flight_;
  std::function<void()> progress_;
  std::shared_ptr<ActiveWorks> active_;
  bool done_ = false;
  bool abandoned_ = false;  // failed or given up by its handle: never advanced again
  std::exception_ptr failure_;
};

// Messages posted at once, then an optional local step (a reduction, or nothing).
class P2PCommunicator::PlainWork final : public WatchedWork {
 public:
  PlainWork(const P2PCommunicator& comm, OpRecord op,
            std::vector<std::unique_ptr<P2PRequest>> requests, std::function<void()> finish,
            std::shared_ptr<void> keep_alive)
      : WatchedWork(comm, std::move(op)),
        requests_(std::move(requests)),
        finish_(std::move(finish)),
        keep_alive_(std::move(keep_alive)) {}

 private:
  bool advance() override {
    std::erase_if(requests_, [](auto& request) { return request->test(); });
    if (!requests_.empty()) return false;
    if (finish_) std::exchange(finish_, {})();
    return true;
  }
  std::vector<std::unique_ptr<P2PRequest>> requests_;
  std::function<void()> finish_;
  std::shared_ptr<void> keep_alive_;
};

// The ring: blocks of the buffer travel to the next rank, each block split into chunks that move
// independently, so a chunk is being reduced while the others are on the wire. Reduce-scatter
// steps s = 0..n-2 send block r-s-1 and receive block r-s-2, which is reduced with this rank's
// own block into the accumulator; afterwards rank r holds the whole reduction of block r.
// All-gather steps send block r-s and receive block r-s-1 straight into place.
class P2PCommunicator::RingWork final : public WatchedWork {
 public:
  struct Buffers {
    DType dtype;
    int64_t elements = 0;         // of the whole buffer (n blocks)
    const char* input = nullptr;  // this rank's contribution, all n blocks (reduce-scatter)
    char* accumulator = nullptr;  // n blocks: the running value of every block
    char* own_block = nullptr;    // where block `rank` ends up (may be inside accumulator)
    std::shared_ptr<void> keep_alive;
  };
  RingWork(P2PCommunicator& comm, OpRecord op, TagLayout::Collective which, Buffers buffers,
           bool reduce, bool gather, ReduceOp reduce_op)
      : WatchedWork(comm, op),
        comm_(comm),
        which_(which),
        n_(comm.size()),
        rank_(comm.rank()),
        seq_(op.seq),
        b_(std::move(buffers)),
        element_(dtype_size(b_.dtype)),
        reduce_op_(reduce_op),
        reduce_steps_(reduce ? n_ - 1 : 0),
        steps_(reduce_steps_ + (gather ? n_ - 1 : 0)) {
    block_begin_.resize(n_ + 1);
    for (int b = 0; b <= n_; ++b) block_begin_[b] = b_.elements * b / n_;
    int64_t largest = 0;
    for (int b = 0; b < n_; ++b) largest = std::max(largest, block_begin_[b + 1] - block_begin_[b]);
    TANDEM_USER_CHECK(static_cast<uint64_t>(std::max(steps_, 1)) <= TagLayout::kMaxParts,
                      "a ring over ", n_, " ranks needs ", steps_,
                      " message parts per collective, more than the tag's ", TagLayout::kMaxParts,
                      " (at most 16385 ranks per group)");
    const int64_t by_size =
        (largest * static_cast<int64_t>(element_) + kRingChunkBytes - 1) / kRingChunkBytes;
    chunks_ = std::clamp<int64_t>(by_size, 1, TagLayout::kMaxParts / std::max(steps_, 1));
    chunk_elements_ = (largest + chunks_ - 1) / chunks_;
    if (reduce_steps_ > 0)
      scratch_ = Tensor::empty({std::max<int64_t>(chunks_ * chunk_elements_, 1)}, b_.dtype);
    chunk_state_.resize(chunks_);
    for (int64_t c = 0; c < chunks_; ++c) post(c);
  }

 private:
  struct ChunkState {
    int step = 0;
    std::unique_ptr<P2PRequest> send, recv;
  };
  // Elements [first, first + count) of chunk c of block b.
  std::pair<int64_t, int64_t> chunk(int block, int64_t c) const {
    const int64_t begin = block_begin_[block], length = block_begin_[block + 1] - begin;
    const int64_t lo = length * c / chunks_, hi = length * (c + 1) / chunks_;
    return {begin + lo, hi - lo};
  }
  char* accumulated(int block, int64_t element) const {
    return block == rank_ ? b_.own_block + (element - block_begin_[block]) * element_
                          : b_.accumulator + element * element_;
  }
  int send_block(int step) const {
    return step < reduce_steps_ ? mod(rank_ - step - 1, n_)
                                : mod(rank_ - (step - reduce_steps_), n_);
  }
  int recv_block(int step) const {
    return step < reduce_steps_ ? mod(rank_ - step - 2, n_)
                                : mod(rank_ - (step - reduce_steps_) - 1, n_);
  }
  void post(int64_t c) {
    ChunkState& state = chunk_state_[c];
    if (state.step >= steps_) return;
    const int step = state.step;
    const uint64_t part = static_cast<uint64_t>(step) * chunks_ + c;
    const auto [send_first, send_count] = chunk(send_block(step), c);
    const auto [recv_first, recv_count] = chunk(recv_block(step), c);
    if (send_count > 0) {
      // The first reduce-scatter step sends this rank's own contribution.
      const char* source = step == 0 && reduce_steps_ > 0
                               ? b_.input + send_first * element_
                               : accumulated(send_block(step), send_first);
      state.send =
          comm_.send_bytes(source, send_count * element_, mod(rank_ + 1, n_),
                           TagLayout::collective(comm_.group_id_, which_, seq_, part, rank_));
    }
    if (recv_count > 0) {
      char* target = step < reduce_steps_
                         ? static_cast<char*>(scratch_.raw_data()) + c * chunk_elements_ * element_
                         : accumulated(recv_block(step), recv_first);
      const int prev = mod(rank_ - 1, n_);
      state.recv =
          comm_.post_recv(target, recv_count * element_, prev,
                          TagLayout::collective(comm_.group_id_, which_, seq_, part, prev));
    }
  }
  bool advance() override {
    bool done = true;
    for (int64_t c = 0; c < chunks_; ++c) {
      ChunkState& state = chunk_state_[c];
      while (state.step < steps_) {
        if ((state.send && !state.send->test()) || (state.recv && !state.recv->test())) break;
        state.send.reset();
        state.recv.reset();
        if (state.step < reduce_steps_) {
          const int block = recv_block(state.step);
          const auto [first, count] = chunk(block, c);
          if (count > 0)
            reduce_elements(
                b_.dtype, accumulated(block, first), b_.input + first * element_,
                static_cast<const char*>(scratch_.raw_data()) + c * chunk_elements_ * element_,
                count, reduce_op_);
        }
        ++state.step;
        post(c);
      }
      done &= state.step >= steps_;
    }
    return done;
  }

  P2PCommunicator& comm_;  // operations never outlive their communicator's messages
  TagLayout::Collective which_;
  int n_, rank_;
  uint64_t seq_;
  Buffers b_;
  size_t element_;
  ReduceOp reduce_op_;
  int reduce_steps_, steps_;
  std::vector<int64_t> block_begin_;
  int64_t chunks_ = 1, chunk_elements_ = 0;
  Tensor scratch_;  // one chunk per chain: where the previous rank's partial sum lands
  std::vector<ChunkState> chunk_state_;
};

// A node collective, stepped by whoever polls (its step holds the operation's tensors).
class P2PCommunicator::StepWork final : public WatchedWork {
 public:
  StepWork(const P2PCommunicator& comm, OpRecord op, NodeCollectives::Step step)
      : WatchedWork(comm, std::move(op)), step_(std::move(step)) {}

 private:
  bool advance() override { return step_(); }
  NodeCollectives::Step step_;
};

NodeCollectives* P2PCommunicator::node() {
  if (node_state_ == 0) {
    // Collective: every rank reaches its first large collective on this group with the same
    // setting, so they open (or decline) together. Opening runs collectives of its own on this
    // group (large ones on large groups): they take the message path.
    node_state_ = -1;
    node_ = node_collectives_ && size() > 1 ? NodeCollectives::open(*this) : nullptr;
    node_state_ = node_ ? 1 : -1;
  }
  return node_.get();
}

CommHandle P2PCommunicator::launch_steps(OpRecord op, NodeCollectives::Step step) {
  return CommHandle(std::make_unique<StepWork>(*this, std::move(op), std::move(step)));
}

P2PCommunicator::P2PCommunicator(std::string name, int rank, std::vector<int> world_ranks,
                                 uint16_t group_id, std::shared_ptr<Watchdog> watchdog)
    : name_(std::move(name)),
      rank_(rank),
      members_(std::make_shared<const std::vector<int>>(std::move(world_ranks))),
      group_id_(group_id),
      in_flight_(std::make_shared<std::atomic<int64_t>>(0)),
      watchdog_(std::move(watchdog)) {
  TANDEM_USER_CHECK(static_cast<int64_t>(members_->size()) <= TagLayout::kMaxGroupSize, "group '",
                    name_, "' has ", members_->size(), " ranks; the message tag holds ",
                    TagLayout::kMaxGroupSize, " (16 bits of source rank)");
  TANDEM_CHECK(group_id_ >= 1, "group id 0 is unused");
}

OpRecord P2PCommunicator::begin(const char* op, size_t bytes, bool collective,
                                std::vector<int> peers) {
  OpRecord record;
  record.op = op;
  record.group = name_;
  record.bytes = bytes;
  if (collective) {
    TANDEM_USER_CHECK(*in_flight_ < TagLayout::kMaxInFlight, "group '", name_, "' has ",
                      in_flight_->load(), " collectives in flight; at most ",
                      TagLayout::kMaxInFlight,
                      " can be (the tag's 13-bit sequence number wraps): wait on some first");
    ++*in_flight_;
    record.seq = ++seq_;
    record.members = members_;
  } else {
    for (int& peer : peers) peer = (*members_)[peer];
    record.members = std::make_shared<const std::vector<int>>(std::move(peers));
  }
  watchdog_->enter(record);
  return record;
}

CommHandle P2PCommunicator::launch(OpRecord op, std::vector<std::unique_ptr<P2PRequest>> requests,
                                   std::function<void()> finish, std::shared_ptr<void> keep_alive) {
  return CommHandle(std::make_unique<PlainWork>(*this, std::move(op), std::move(requests),
                                                std::move(finish), std::move(keep_alive)));
}

std::unique_ptr<P2PRequest> P2PCommunicator::send_bytes(const void* data, size_t bytes, int peer,
                                                        uint64_t tag) {
  bytes_sent_ += bytes;
  return post_send(data, bytes, peer, tag);
}

CommHandle P2PCommunicator::all_gather(const Tensor& input, Tensor& output) {
  const int n = size();
  TANDEM_CHECK(input.dtype() == output.dtype() && output.numel() == input.numel() * n,
               "all_gather: output of ", output.numel(), " elements must be ", n, " x the input's ",
               input.numel());
  if (output.nbytes() >= kRingMinBytes && node()) {
    OpRecord record = begin("all_gather", output.nbytes(), true);
    return launch_steps(std::move(record), node_->all_gather(input, output));
  }
  OpRecord record = begin("all_gather", output.nbytes(), true);
  const size_t block = input.nbytes();
  char* out = static_cast<char*>(output.raw_data());
  if (block) std::memcpy(out + rank_ * block, input.raw_data(), block);
  RingWork::Buffers buffers{output.dtype(),
                            output.numel(),
                            nullptr,
                            out,
                            out + rank_ * block,
                            std::make_shared<Tensor>(output)};
  return CommHandle(std::make_unique<RingWork>(*this, std::move(record),
                                               TagLayout::Collective::kAllGather,
                                               std::move(buffers), false, true, ReduceOp::kSum));
}

// A small all-reduce: every peer gets the whole tensor and every rank sums the n copies in rank
// order, so all ranks get identical bits in one round.
CommHandle P2PCommunicator::gather_and_reduce(Tensor& tensor, ReduceOp op) {
  const int n = size();
  const size_t bytes = tensor.nbytes();
  auto gathered = std::make_shared<Tensor>(Tensor::empty({n, tensor.numel()}, tensor.dtype()));
  OpRecord record = begin("all_reduce", bytes, true);
  char* all = static_cast<char*>(gathered->raw_data());
  if (bytes) std::memcpy(all + rank_ * bytes, tensor.raw_data(), bytes);
  std::vector<std::unique_ptr<P2PRequest>> requests;
  for (int p = 0; p < n; ++p) {
    if (p == rank_) continue;
    requests.push_back(post_recv(all + p * bytes, bytes, p,
                                 TagLayout::collective(group_id_, kAllReduce, record.seq, 0, p)));
    requests.push_back(
        send_bytes(tensor.raw_data(), bytes, p,
                   TagLayout::collective(group_id_, kAllReduce, record.seq, 0, rank_)));
  }
  Tensor target = tensor;
  auto finish = [target, gathered, n, op, bytes]() mutable {
    const char* all = static_cast<const char*>(gathered->raw_data());
    if (bytes) std::memcpy(target.raw_data(), all, bytes);
    for (int p = 1; p < n; ++p)
      reduce_elements(target.dtype(), target.raw_data(), target.raw_data(), all + p * bytes,
                      target.numel(), op);
  };
  return launch(std::move(record), std::move(requests), finish, gathered);
}

CommHandle P2PCommunicator::all_reduce(Tensor& tensor, ReduceOp op) {
  check_reducible(tensor.dtype(), "all_reduce");
  if (tensor.nbytes() < kRingMinBytes) return gather_and_reduce(tensor, op);
  if (node()) {
    OpRecord record = begin("all_reduce", tensor.nbytes(), true);
    return launch_steps(std::move(record), node_->all_reduce(tensor, op));
  }
  if (size() <= 2) return gather_and_reduce(tensor, op);
  OpRecord record = begin("all_reduce", tensor.nbytes(), true);
  char* data = static_cast<char*>(tensor.raw_data());
  const int64_t own = tensor.numel() * rank_ / size();
  RingWork::Buffers buffers{tensor.dtype(),
                            tensor.numel(),
                            data,
                            data,
                            data + own * dtype_size(tensor.dtype()),
                            std::make_shared<Tensor>(tensor)};
  return CommHandle(std::make_unique<RingWork>(*this, std::move(record),
                                               TagLayout::Collective::kAllReduce,
                                               std::move(buffers), true, true, op));
}

CommHandle P2PCommunicator::reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) {
  check_reducible(input.dtype(), "reduce_scatter");
  const int n = size();
  TANDEM_CHECK(input.dtype() == output.dtype() && input.numel() == output.numel() * n,
               "reduce_scatter: input of ", input.numel(), " elements for ", n, " ranks must be ",
               n, " x the output's ", output.numel());
  if (input.nbytes() >= kRingMinBytes && node()) {
    OpRecord record = begin("reduce_scatter", input.nbytes(), true);
    return launch_steps(std::move(record), node_->reduce_scatter(input, output, op));
  }
  OpRecord record = begin("reduce_scatter", input.nbytes(), true);
  if (n == 1) {
    output.copy_from(input);
    return launch(std::move(record), {});
  }
  // Partial sums of the other blocks accumulate in a scratch buffer; block `rank` lands in place.
  // The input stays alive too: the first step sends from it.
  auto tensors = std::make_shared<std::array<Tensor, 3>>(
      std::array{Tensor::empty({input.numel()}, input.dtype()), output, input});
  RingWork::Buffers buffers{input.dtype(),
                            input.numel(),
                            static_cast<const char*>(input.raw_data()),
                            static_cast<char*>((*tensors)[0].raw_data()),
                            static_cast<char*>(output.raw_data()),
                            tensors};
  return CommHandle(std::make_unique<RingWork>(*this, std::move(record),
                                               TagLayout::Collective::kReduceScatter,
                                               std::move(buffers), true, false, op));
}

CommHandle P2PCommunicator::broadcast(Tensor& tensor, int root) {
  const int n = size();
  TANDEM_CHECK(root >= 0 && root < n, "broadcast from rank ", root, " in a group of ", n);
  OpRecord record = begin("broadcast", tensor.nbytes(), true);
  const uint64_t tag =
      TagLayout::collective(group_id_, TagLayout::Collective::kBroadcast, record.seq, 0, root);
  std::vector<std::unique_ptr<P2PRequest>> requests;
  if (rank_ == root) {
    for (int p = 0; p < n; ++p)
      if (p != root) requests.push_back(send_bytes(tensor.raw_data(), tensor.nbytes(), p, tag));
  } else {
    requests.push_back(post_recv(tensor.raw_data(), tensor.nbytes(), root, tag));
  }
  return launch(std::move(record), std::move(requests));
}

CommHandle P2PCommunicator::all_to_all_v(const Tensor& send, const std::vector<int64_t>& send_rows,
                                         Tensor& recv, const std::vector<int64_t>& recv_rows) {
  const int n = size();
  const size_t row = check_all_to_all_v(send, send_rows, recv, recv_rows, n);
  int64_t send_total = 0, recv_total = 0;
  for (int p = 0; p < n; ++p) send_total += send_rows[p], recv_total += recv_rows[p];
  OpRecord record = begin("all_to_all_v", (send_total + recv_total) * row, true);
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
      requests.push_back(post_recv(r + r_off, in_bytes, p,
                                   TagLayout::collective(group_id_, kAllToAll, record.seq, 0, p)));
      requests.push_back(
          send_bytes(s + s_off, out_bytes, p,
                     TagLayout::collective(group_id_, kAllToAll, record.seq, 0, rank_)));
    }
    s_off += out_bytes;
    r_off += in_bytes;
  }
  return launch(std::move(record), std::move(requests));
}

CommHandle P2PCommunicator::exchange_rows(const Tensor& send, const std::vector<RowBlock>& sends,
                                          Tensor& recv, const std::vector<RowBlock>& recvs) {
  check_row_blocks(send, sends, recv, recvs, size());
  const size_t row = std::max(row_bytes(send), row_bytes(recv));
  size_t total = 0;
  for (const auto* list : {&sends, &recvs})
    for (const RowBlock& b : *list) total += b.rows * row;
  OpRecord record = begin("exchange_rows", total, true);
  // The k-th non-empty block with a peer is message part k.
  auto tag = [&](uint64_t k, int source) {
    TANDEM_USER_CHECK(k < TagLayout::kMaxParts, "exchange_rows: more than ", TagLayout::kMaxParts,
                      " blocks with one peer do not fit the message tag");
    return TagLayout::collective(group_id_, TagLayout::Collective::kExchangeRows, record.seq, k,
                                 source);
  };
  std::vector<int> sent_to(size(), 0), received_from(size(), 0);
  std::vector<std::unique_ptr<P2PRequest>> requests;
  for (const RowBlock& b : recvs) {
    if (b.rows == 0 || b.peer == rank_) continue;  // blocks from itself are copied below
    char* target = static_cast<char*>(recv.raw_data()) + b.row * row;
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
    requests.push_back(send_bytes(source, b.rows * row, b.peer, tag(sent_to[b.peer]++, rank_)));
  }
  return launch(std::move(record), std::move(requests));
}

CommHandle P2PCommunicator::send(const Tensor& tensor, int peer, int tag) {
  TANDEM_CHECK(peer >= 0 && peer < size() && peer != rank_, "send to rank ", peer, " from ", rank_,
               " in a group of ", size());
  TANDEM_CHECK(tag >= 0, "send: tag ", tag, " must be non-negative");
  OpRecord record = begin("send", tensor.nbytes(), false, {peer});
  std::vector<std::unique_ptr<P2PRequest>> requests;
  requests.push_back(
      send_bytes(tensor.raw_data(), tensor.nbytes(), peer, TagLayout::user(group_id_, tag, rank_)));
  return launch(std::move(record), std::move(requests));
}

CommHandle P2PCommunicator::recv(Tensor& tensor, int peer, int tag) {
  TANDEM_CHECK(peer >= 0 && peer < size() && peer != rank_, "recv from rank ", peer, " on ", rank_,
               " in a group of ", size());
  TANDEM_CHECK(tag >= 0, "recv: tag ", tag, " must be non-negative");
  OpRecord record = begin("recv", tensor.nbytes(), false, {peer});
  std::vector<std::unique_ptr<P2PRequest>> requests;
  requests.push_back(
      post_recv(tensor.raw_data(), tensor.nbytes(), peer, TagLayout::user(group_id_, tag, peer)));
  return launch(std::move(record), std::move(requests));
}

CommHandle P2PCommunicator::barrier() {
  Tensor token = Tensor::zeros({1}, DType::kU8);
  auto all = std::make_shared<Tensor>(Tensor::empty({size()}, DType::kU8));
  OpRecord record = begin("barrier", 0, true);
  std::vector<std::unique_ptr<P2PRequest>> requests;
  auto keep = std::make_shared<std::pair<Tensor, std::shared_ptr<Tensor>>>(token, all);
  for (int p = 0; p < size(); ++p) {
    if (p == rank_) continue;
    requests.push_back(post_recv(all->data<uint8_t>() + p, 1, p,
                                 TagLayout::collective(group_id_, kBarrier, record.seq, 0, p)));
    requests.push_back(send_bytes(
        token.raw_data(), 1, p, TagLayout::collective(group_id_, kBarrier, record.seq, 0, rank_)));
  }
  return launch(std::move(record), std::move(requests), {}, keep);
}

P2PCommunicator::SplitGroup P2PCommunicator::agree_split(int color, int key,
                                                         uint64_t& next_free_id) {
  const int n = size();
  constexpr int kFields = 4;
  Tensor mine = Tensor::empty({kFields}, DType::kI64),
         all = Tensor::empty({kFields * n}, DType::kI64);
  int64_t* m = mine.data<int64_t>();
  m[0] = color;
  m[1] = key;
  m[2] = (*members_)[rank_];
  m[3] = static_cast<int64_t>(next_free_id);
  all_gather(mine, all).wait();
  std::map<int64_t, std::vector<std::tuple<int64_t, int, int>>> by_color;  // key, rank, world
  uint64_t base = 0;
  for (int p = 0; p < n; ++p) {
    const int64_t* v = all.data<int64_t>() + kFields * p;
    by_color[v[0]].emplace_back(v[1], p, static_cast<int>(v[2]));
    base = std::max(base, static_cast<uint64_t>(v[3]));
  }
  const uint64_t colors = by_color.size();
  TANDEM_USER_CHECK(base + colors - 1 <= TagLayout::kMaxGroupId, "split of group '", name_,
                    "' into ", colors, " groups needs group ids up to ", base + colors - 1,
                    ", but the message tag holds ids up to ", TagLayout::kMaxGroupId,
                    " (16 bits) over the life of a rank: create fewer communicators");
  next_free_id = base + colors;
  SplitGroup group;
  group.node_collectives = node_collectives_;
  uint64_t index = 0;
  for (auto& [c, members] : by_color) {
    if (c == color) {
      std::sort(members.begin(), members.end());
      for (size_t i = 0; i < members.size(); ++i) {
        if (std::get<1>(members[i]) == rank_) group.rank = static_cast<int>(i);
        group.world_ranks.push_back(std::get<2>(members[i]));
      }
      group.id = static_cast<uint16_t>(base + index);
    }
    ++index;
  }
  group.name = name_ + "/split" + std::to_string(++splits_) + "(" + std::to_string(color) + ")";
  return group;
}

}  // namespace tandem::comm
