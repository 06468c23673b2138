// Dispatch/combine: the count exchange, then payload blocks placed directly where the other side
// wants them (expert-major on the experts' ranks, slot order on the tokens' ranks), as messages
// or written and read in the node's shared memory.
#include "comm/expert_dispatch.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <numeric>
#include <thread>

#include "kernels/elementwise.h"

namespace tandem::comm {

namespace {

Shape with_rows(const Tensor& like, int64_t rows) {
  Shape shape = like.shape();
  shape[0] = rows;
  return shape;
}

// Bytes of one row of the leading dimension, also for a tensor with no rows.
size_t bytes_per_row(const Tensor& t) {
  const Shape& shape = t.shape();
  return static_cast<size_t>(
             std::accumulate(shape.begin() + 1, shape.end(), int64_t{1}, std::multiplies<>())) *
         dtype_size(t.dtype());
}

// A started shared-memory exchange: the places travel (a collective); then this rank's step,
// which writes or reads rows in peers' memory and tells each peer it is done by storing the
// exchange's number in that peer's control block; then the wait until every peer has told us
// the same. A wait past the deadline names the peers that never did, instead of hanging.
class SharedExchangeWork final : public Work {
 public:
  SharedExchangeWork(CommHandle places, std::function<void()> step,
                     std::function<std::vector<int>()> missing, std::string what, int timeout_ms,
                     std::shared_ptr<bool> finished)
      : places_(std::move(places)),
        step_(std::move(step)),
        missing_(std::move(missing)),
        what_(std::move(what)),
        timeout_ms_(timeout_ms),
        finished_(std::move(finished)) {}
  bool test() override {
    if (!stepped_) {
      if (!places_.test()) return false;
      run_step();
    }
    if (!missing_().empty()) return false;
    *finished_ = true;
    return true;
  }
  void wait() override {
    if (!stepped_) {
      places_.wait();
      run_step();
    }
    // Yield first (a peer may only need the core back), then sleep progressively longer.
    const auto start = std::chrono::steady_clock::now();
    std::chrono::microseconds pause{0};
    for (std::vector<int> missing = missing_(); !missing.empty(); missing = missing_()) {
      const double waited =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited * 1000 > timeout_ms_) {
        std::string ranks;
        for (int rank : missing) ranks += (ranks.empty() ? "" : ", ") + std::to_string(rank);
        throw CommTimeout(what_ + ": after " + std::to_string(static_cast<int>(waited)) +
                          " s, rank(s) " + ranks +
                          " of the group never finished writing to or reading from this rank "
                          "(stuck before or inside this exchange)");
      }
      if (pause.count() == 0) {
        std::this_thread::yield();
        if (++yields_ > 64) pause = std::chrono::microseconds{10};
      } else {
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds{1000});
      }
    }
    *finished_ = true;
  }
  std::string describe() const override { return what_; }

 private:
  void run_step() {
    stepped_ = true;
    step_();
  }
  CommHandle places_;
  std::function<void()> step_;
  std::function<std::vector<int>()> missing_;
  std::string what_;
  int timeout_ms_;
  std::shared_ptr<bool> finished_;
  bool stepped_ = false;
  int yields_ = 0;
};

// Reads the places a peer sent, in the order exchange_places wrote them (three int64 each).
struct PlaceCursor {
  const int64_t* at;
  SharedRef next() {
    const SharedRef ref{at[0], at[1], at[2]};
    at += 3;
    return ref;
  }
};

int64_t rows_to_peers(const std::vector<RowBlock>& sends, int rank) {
  int64_t rows = 0;
  for (const RowBlock& b : sends)
    if (b.peer != rank) rows += b.rows;
  return rows;
}

}  // namespace

ExpertDispatcher::ExpertDispatcher(Communicator& expert_group, int64_t n_experts,
                                   std::shared_ptr<NodeSharedMemory> shared)
    : group_(expert_group), n_experts_(n_experts), shared_(std::move(shared)) {
  TANDEM_CHECK(!shared_ || (shared_->group_size() == group_.size() &&
                            shared_->group_rank() == group_.rank()),
               "the shared memory given to the expert dispatcher on ", group_.name(),
               " was opened over a different group");
  TANDEM_CHECK(!shared_ || group_.device().type == DeviceType::kCPU, "expert rows of ",
               group_.name(), " are on ", group_.device().to_string(),
               ", which the node's shared memory cannot hold; move them as messages");
  if (shared_) {
    control_ = shared_->empty({kControlLine * group_.size()}, DType::kI64);
    control_.zero_();
  }
  TANDEM_USER_CHECK(n_experts % expert_group.size() == 0, "model.n_routed_experts = ", n_experts,
                    " is not divisible by the expert-parallel group size ", expert_group.size());
  experts_per_rank_ = n_experts / expert_group.size();
  // On NCCL the first exchange would connect the peers, which blocks until each peer reaches it:
  // under F&B interleaving the forward's and the backward's groups meet in either order.
  if (group_.device().type != DeviceType::kCPU) connect_peers(group_);
}

Tensor ExpertDispatcher::expert_output(Shape shape, DType dtype) {
  return shared_ ? shared_->empty(std::move(shape), dtype)
                 : Tensor::empty(std::move(shape), dtype, group_.device());
}

void ExpertDispatcher::check_previous_finished() {
  TANDEM_CHECK(!shared_ || !last_finished_ || *last_finished_, "an expert exchange on ",
               group_.name(),
               " started before the previous one completed (or after one was abandoned by an "
               "error); in shared memory each must be waited before the next starts");
}

DispatchLayout ExpertDispatcher::plan(const Tensor& expert_ids) {
  PendingPlan pending = start_plan(expert_ids);
  return finish_plan(pending);
}

PendingPlan ExpertDispatcher::start_plan(const Tensor& expert_ids) {
  check_previous_finished();
  const int peers = group_.size();
  const int64_t local = experts_per_rank_;
  PendingPlan pending;
  DispatchLayout& layout = pending.layout;
  layout.tokens = expert_ids.dim(0);
  layout.plan = kernels::make_permute_plan(expert_ids, n_experts_);
  // Counts for each peer's local experts travel as one int64 row per peer, in the memory the
  // group moves (a GPU's for NCCL: the plan's offsets are on the host either way).
  Tensor counts = Tensor::empty({peers, local}, DType::kI64);
  for (int64_t e = 0; e < peers * local; ++e)
    counts.data<int64_t>()[e] = layout.plan.rows_for_expert(e);
  const Device device = group_.device();
  pending.send_counts = device.type == DeviceType::kCPU ? counts : counts.to(device);
  pending.recv_counts = Tensor::empty({peers, local}, DType::kI64, device);
  const std::vector<int64_t> ones(peers, 1);
  pending.handle = group_.all_to_all_v(pending.send_counts, ones, pending.recv_counts, ones);
  return pending;
}

DispatchLayout ExpertDispatcher::finish_plan(PendingPlan& pending) {
  pending.handle.wait();
  const int peers = group_.size();
  const int64_t local = experts_per_rank_;
  DispatchLayout layout = std::move(pending.layout);
  const Tensor counts = pending.recv_counts.device().type == DeviceType::kCPU
                            ? pending.recv_counts
                            : pending.recv_counts.to(Device::cpu());
  const int64_t* recv = counts.data<int64_t>();
  layout.recv_by_expert.assign(recv, recv + peers * local);
  layout.expert_offsets.assign(local + 1, 0);
  for (int p = 0; p < peers; ++p)
    for (int64_t e = 0; e < local; ++e)
      layout.expert_offsets[e + 1] += layout.recv_by_expert[p * local + e];
  for (int64_t e = 0; e < local; ++e) layout.expert_offsets[e + 1] += layout.expert_offsets[e];
  return layout;
}

// Blocks of the movement between the tokens' ranks (rows grouped by global expert, as the plan
// orders them) and the experts' ranks (rows grouped by local expert, then by source rank). Listing
// them per (peer, local expert) on both sides lets exchange_rows place every block directly.
void ExpertDispatcher::blocks(const DispatchLayout& layout, std::vector<RowBlock>& token_side,
                              std::vector<RowBlock>& expert_side) const {
  const int peers = group_.size();
  const int64_t local = experts_per_rank_;
  std::vector<int64_t> next(layout.expert_offsets.begin(), layout.expert_offsets.end() - 1);
  token_side.clear();
  expert_side.clear();
  for (int p = 0; p < peers; ++p)
    for (int64_t e = 0; e < local; ++e) {
      const int64_t global = p * local + e;
      token_side.push_back(
          {p, layout.plan.expert_offsets[global], layout.plan.rows_for_expert(global)});
      const int64_t rows = layout.recv_by_expert[p * local + e];
      expert_side.push_back({p, next[e], rows});
      next[e] += rows;
    }
}

Tensor ExpertDispatcher::to_experts(const Tensor& slot_rows, const DispatchLayout& layout) {
  return start_to_experts(slot_rows, layout).wait();
}

Tensor ExpertDispatcher::from_experts(const Tensor& expert_rows, const DispatchLayout& layout) {
  return start_from_experts(expert_rows, layout).wait();
}

PendingRows ExpertDispatcher::start_to_experts(const Tensor& slot_rows,
                                               const DispatchLayout& layout) {
  std::vector<RowBlock> token_side, expert_side;
  blocks(layout, token_side, expert_side);
  return start_exchange(slot_rows, nullptr, layout.expert_offsets.back(), token_side, expert_side);
}

PendingRows ExpertDispatcher::start_from_experts(const Tensor& expert_rows,
                                                 const DispatchLayout& layout) {
  std::vector<RowBlock> token_side, expert_side;
  blocks(layout, token_side, expert_side);
  return start_exchange(expert_rows, nullptr, layout.tokens * layout.plan.top_k, expert_side,
                        token_side);
}

PendingRows ExpertDispatcher::start_dispatch(const Tensor& x, const DispatchLayout& layout) {
  std::vector<RowBlock> token_side, expert_side;
  blocks(layout, token_side, expert_side);
  return start_exchange(x, &layout.plan, layout.expert_offsets.back(), token_side, expert_side);
}

Tensor ExpertDispatcher::dispatch(const Tensor& x, const DispatchLayout& layout) {
  return start_dispatch(x, layout).wait();
}

PendingRows ExpertDispatcher::start_exchange(const Tensor& source,
                                             const kernels::PermutePlan* gather, int64_t rows,
                                             const std::vector<RowBlock>& sends,
                                             const std::vector<RowBlock>& recvs) {
  if (shared_) return start_shared_exchange(source, gather, rows, sends, recvs);
  PendingRows pending;
  pending.source = source;
  if (gather) {
    pending.source = Tensor::empty(with_rows(source, gather->n_tokens * gather->top_k),
                                   source.dtype(), source.device());
    kernels::permute_rows(source, *gather, pending.source);
  }
  pending.rows = Tensor::empty(with_rows(source, rows), source.dtype(), source.device());
  pending.bytes_to_peers =
      rows_to_peers(sends, group_.rank()) * static_cast<int64_t>(bytes_per_row(source));
  pending.handle = group_.exchange_rows(pending.source, sends, pending.rows, recvs);
  return pending;
}

CommHandle ExpertDispatcher::exchange_places(const Tensor& tensor,
                                             const std::vector<RowBlock>& listed,
                                             const std::vector<RowBlock>& matching, Tensor& sent,
                                             Tensor& places) {
  const int peers = group_.size();
  const size_t row = bytes_per_row(tensor);
  // Per peer: the places of the non-empty blocks, then that of this rank's control block.
  std::vector<int64_t> send_counts(peers, 1), recv_counts(peers, 1);
  for (const RowBlock& b : listed) send_counts[b.peer] += b.rows > 0;
  for (const RowBlock& b : matching) recv_counts[b.peer] += b.rows > 0;
  Tensor mine = Tensor::empty(
      {std::accumulate(send_counts.begin(), send_counts.end(), int64_t{0}), 3}, DType::kI64);
  int64_t* out = mine.data<int64_t>();
  auto put = [&](const void* pointer) {
    const auto ref = shared_->find(pointer);
    TANDEM_CHECK(ref.has_value(), "expert exchange: rows to share are not in shared memory");
    *out++ = ref->fd, *out++ = ref->segment_bytes, *out++ = ref->offset;
  };
  for (int p = 0; p < peers; ++p) {
    for (const RowBlock& b : listed)
      if (b.peer == p && b.rows > 0) put(static_cast<const char*>(tensor.raw_data()) + b.row * row);
    put(control_.raw_data());
  }
  places = Tensor::empty({std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0}), 3},
                         DType::kI64);
  sent = mine;  // the caller keeps it until the handle completes: the backend may read it late
  return group_.all_to_all_v(mine, send_counts, places, recv_counts);
}

// Push: the receiving rank allocates its rows in shared memory and sends each peer the places of
// that peer's blocks; each rank writes its blocks there and signals the peer; the exchange is
// complete when every peer has signalled.
PendingRows ExpertDispatcher::start_shared_exchange(const Tensor& source,
                                                    const kernels::PermutePlan* gather,
                                                    int64_t rows,
                                                    const std::vector<RowBlock>& sends,
                                                    const std::vector<RowBlock>& recvs) {
  const uint64_t number = begin_shared_exchange();
  PendingRows pending;
  pending.source = source;
  pending.rows = shared_->empty(with_rows(source, rows), source.dtype());
  const size_t row = bytes_per_row(source);
  pending.bytes_to_peers = rows_to_peers(sends, group_.rank()) * static_cast<int64_t>(row);
  auto places = std::make_shared<Tensor>();
  Tensor sent;
  CommHandle first = exchange_places(pending.rows, recvs, sends, sent, *places);
  std::vector<int64_t> token_of_row;
  if (gather) token_of_row = gather->token_of_row;
  // The step owns every buffer the exchange touches (also the rows peers write into), so that a
  // handle abandoned by an error never lets memory a peer still uses be reallocated.
  auto write = [this, number, source, received = pending.rows, sent, row, sends, places,
                token_of_row = std::move(token_of_row)] {
    const char* src = static_cast<const char*>(source.raw_data());
    PlaceCursor place{places->data<int64_t>()};
    for (int p = 0; p < group_.size(); ++p) {
      for (const RowBlock& b : sends) {
        if (b.peer != p || b.rows == 0) continue;
        char* dst = shared_->address(p, place.next());
        if (token_of_row.empty()) {
          std::memcpy(dst, src + b.row * row, b.rows * row);
          continue;
        }
        for (int64_t i = 0; i < b.rows; ++i)
          std::memcpy(dst + i * row, src + token_of_row[b.row + i] * row, row);
      }
      signal(p, place.next(), number);
    }
  };
  pending.handle = shared_work(std::move(first), std::move(write), number);
  return pending;
}

uint64_t ExpertDispatcher::begin_shared_exchange() {
  check_previous_finished();
  last_finished_ = std::make_shared<bool>(false);
  return ++shared_exchanges_;
}

// Rank r's line in peer p's control block says which exchange r last finished for p. The store is
// a release: the rows written (or read) before it are visible (or done) once p sees the number.
// The full fence first also orders the non-temporal stores a large memcpy may use, which a
// release store alone does not.
void ExpertDispatcher::signal(int peer, const SharedRef& control, uint64_t number) {
  auto* lines = reinterpret_cast<int64_t*>(shared_->address(peer, control));
  std::atomic_thread_fence(std::memory_order_seq_cst);
  std::atomic_ref<int64_t>(lines[kControlLine * group_.rank()])
      .store(static_cast<int64_t>(number), std::memory_order_release);
}

CommHandle ExpertDispatcher::shared_work(CommHandle places, std::function<void()> step,
                                         uint64_t number) {
  auto missing = [this, number, control = control_] {
    std::vector<int> ranks;
    auto* lines = control.data<int64_t>();
    for (int q = 0; q < group_.size(); ++q)
      if (std::atomic_ref<int64_t>(lines[kControlLine * q]).load(std::memory_order_acquire) <
          static_cast<int64_t>(number))
        ranks.push_back(q);
    return ranks;
  };
  return CommHandle(std::make_unique<SharedExchangeWork>(
      std::move(places), std::move(step), std::move(missing),
      "expert exchange #" + std::to_string(number) + " in shared memory on " + group_.name(),
      shared_->timeout_ms(), last_finished_));
}

Tensor ExpertDispatcher::combine(const Tensor& expert_out, const Tensor& gate_weights,
                                 const DispatchLayout& layout, Tensor* slot_rows) {
  PendingRows pending = start_combine(expert_out, gate_weights, layout, slot_rows != nullptr);
  pending.wait();
  if (slot_rows) *slot_rows = pending.slot_rows;
  return pending.rows;
}

PendingRows ExpertDispatcher::start_combine(const Tensor& expert_out, const Tensor& gate_weights,
                                            const DispatchLayout& layout, bool keep_slot_rows) {
  std::vector<RowBlock> token_side, expert_side;
  blocks(layout, token_side, expert_side);
  const int64_t slots = layout.tokens * layout.plan.top_k, d = expert_out.dim(1);
  // bf16 outputs travel as bf16 (half the bytes) and are summed in fp32.
  const DType sum_dtype = expert_out.dtype() == DType::kBF16 ? DType::kF32 : expert_out.dtype();
  Tensor y = Tensor::empty({layout.tokens, d}, sum_dtype, expert_out.device());

  if (!shared_) {
    // The received rows are the rows kept for the backward: widened once when bf16, else as is.
    PendingRows pending = start_exchange(expert_out, nullptr, slots, expert_side, token_side);
    const Tensor back = pending.rows;
    Tensor wide =
        back.dtype() == sum_dtype ? back : Tensor::empty(back.shape(), sum_dtype, back.device());
    pending.finish = [back, wide, gate_weights, plan = layout.plan, y]() mutable {
      if (back.dtype() != wide.dtype()) kernels::convert(back, wide);
      kernels::unpermute_weighted(wide, gate_weights, plan, y);
    };
    pending.rows = y;
    if (keep_slot_rows) pending.slot_rows = wide;
    return pending;
  }

  // Pull: the experts' ranks send the places of their output blocks; each tokens' rank reads its
  // rows where they lie and sums them with the gate weights as it reads, then signals every peer
  // that it is done with their memory. Outputs not allocated with expert_output() are first
  // copied into shared memory.
  const uint64_t number = begin_shared_exchange();
  Tensor out = expert_out;
  if (!shared_->find(out.raw_data())) {
    out = shared_->empty(expert_out.shape(), expert_out.dtype());
    out.copy_from(expert_out);
  }
  PendingRows pending;
  pending.source = out;
  pending.rows = y;
  if (keep_slot_rows) pending.slot_rows = Tensor::empty({slots, d}, sum_dtype);
  const size_t row = bytes_per_row(out);
  pending.bytes_to_peers = rows_to_peers(expert_side, group_.rank()) * static_cast<int64_t>(row);
  auto places = std::make_shared<Tensor>();
  Tensor sent;
  CommHandle first = exchange_places(out, expert_side, token_side, sent, *places);
  auto read = [this, number, out, sent, token_side, places, row, slots, gate_weights,
               plan = layout.plan, y, kept = pending.slot_rows]() mutable {
    std::vector<const void*> rows(slots);
    std::vector<SharedRef> controls;
    PlaceCursor place{places->data<int64_t>()};
    for (int p = 0; p < group_.size(); ++p) {
      for (const RowBlock& b : token_side) {
        if (b.peer != p || b.rows == 0) continue;
        const char* src = shared_->address(p, place.next());
        for (int64_t i = 0; i < b.rows; ++i) rows[b.row + i] = src + i * row;
      }
      controls.push_back(place.next());
    }
    kernels::unpermute_weighted_rows(rows, out.dtype(), gate_weights, plan, y);
    if (kept.defined()) {  // the rows in plan order, for the backward (bf16 widened once)
      Tensor copy = out.dtype() == kept.dtype() ? kept : Tensor::empty(kept.shape(), out.dtype());
      for (int64_t r = 0; r < slots; ++r)
        std::memcpy(static_cast<char*>(copy.raw_data()) + r * row, rows[r], row);
      if (copy.dtype() != kept.dtype()) kernels::convert(copy, kept);
    }
    for (int p = 0; p < group_.size(); ++p) signal(p, controls[p], number);
  };
  pending.handle = shared_work(std::move(first), std::move(read), number);
  return pending;
}

}  // namespace tandem::comm
