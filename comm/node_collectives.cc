// Node collectives as a queue of small state machines, driven by whoever polls any of them; ranks
// tell each other how far they are by storing a number in each peer's control block.
#include "comm/node_collectives.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>

#include "comm/bootstrap.h"
#include "comm/faults.h"

namespace tandem::comm {

namespace {

constexpr int64_t kLine = 8;  // int64 per control line: 64 bytes, one cache line
constexpr int kPhases = 4;    // progress values: kPhases · (op number) + phase

enum Phase : int64_t { kStaged = 1, kReduced = 2, kRead = 3 };

// out = inputs[0] op inputs[1] op ... in this order, a cache-sized chunk at a time.
void reduce_in_order(DType dtype, char* out, const std::vector<const char*>& inputs, int64_t n,
                     ReduceOp op) {
  constexpr int64_t kChunk = 8192;
  const size_t element = dtype_size(dtype);
  for (int64_t first = 0; first < n; first += kChunk) {
    const int64_t count = std::min(kChunk, n - first);
    char* o = out + first * element;
    if (inputs.size() == 1) {
      std::memcpy(o, inputs[0] + first * element, count * element);
      continue;
    }
    reduce_elements(dtype, o, inputs[0] + first * element, inputs[1] + first * element, count, op);
    for (size_t q = 2; q < inputs.size(); ++q)
      reduce_elements(dtype, o, o, inputs[q] + first * element, count, op);
  }
}

}  // namespace

struct NodeCollectives::Op {
  enum class Kind { kAllReduce, kReduceScatter, kAllGather } kind;
  Tensor input, output;  // all_reduce: both the tensor itself
  ReduceOp reduce = ReduceOp::kSum;
  int64_t number = 0;  // 1-based, per group
  int phase = 0;       // the last phase this rank signalled
  bool done = false;
  int64_t block_begin(int64_t elements, int size, int block) const {
    return elements * block / size;
  }
};

std::unique_ptr<NodeCollectives> NodeCollectives::open(Communicator& group) {
  std::string why_not;
  auto memory = NodeSharedMemory::open(group, &why_not);
  if (!memory) return nullptr;
  const int n = group.size(), rank = group.rank();
  auto collectives =
      std::unique_ptr<NodeCollectives>(new NodeCollectives(memory, rank, group.world_ranks()));
  // Control blocks travel once: then each operation needs no message at all.
  const SharedRef mine = *memory->find(collectives->control_.raw_data());
  Tensor ref = Tensor::empty({3}, DType::kI64), refs = Tensor::empty({3 * n}, DType::kI64);
  ref.data<int64_t>()[0] = mine.fd;
  ref.data<int64_t>()[1] = mine.segment_bytes;
  ref.data<int64_t>()[2] = mine.offset;
  group.all_gather(ref, refs).wait();
  for (int q = 0; q < n; ++q) {
    const int64_t* r = refs.data<int64_t>() + 3 * q;
    collectives->peer_control_[q] = memory->address(q, SharedRef{r[0], r[1], r[2]});
  }
  group.barrier().wait();  // every control block is zeroed before anyone signals into it
  return collectives;
}

NodeCollectives::NodeCollectives(std::shared_ptr<NodeSharedMemory> memory, int rank,
                                 std::vector<int> world_ranks)
    : memory_(std::move(memory)),
      rank_(rank),
      size_(static_cast<int>(world_ranks.size())),
      world_ranks_(std::move(world_ranks)),
      peer_control_(size_, nullptr) {
  control_ = memory_->empty({kLine * (size_ + 1)}, DType::kI64);
  control_.zero_();
}

NodeCollectives::~NodeCollectives() = default;

void NodeCollectives::signal(int64_t value) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (int q = 0; q < size_; ++q)
    std::atomic_ref<int64_t>(reinterpret_cast<int64_t*>(peer_control_[q])[kLine * rank_])
        .store(value, std::memory_order_release);
}

bool NodeCollectives::everyone_reached(int64_t value) {
  const int64_t* lines = control_.data<int64_t>();
  int behind = -1;
  for (int q = 0; q < size_ && behind < 0; ++q)
    if (std::atomic_ref<const int64_t>(lines[kLine * q]).load(std::memory_order_acquire) < value)
      behind = q;
  if (behind < 0) return true;
  // A few times a second, ask whether the ranks still behind are alive at all.
  const auto now = std::chrono::steady_clock::now();
  if (now < next_liveness_check_) return false;
  next_liveness_check_ = now + std::chrono::milliseconds(100);
  for (int q = behind; q < size_; ++q) {
    if (std::atomic_ref<const int64_t>(lines[kLine * q]).load(std::memory_order_acquire) >= value)
      continue;
    const pid_t pid = memory_->pid_of(q);
    if (process_exited(pid))
      throw PeerLost(describe_rank(world_ranks_[q]) + " is gone: its process " +
                     std::to_string(pid) +
                     " on this node exited while this rank waited for it in a shared-memory "
                     "collective");
  }
  return false;
}

// Copies `source` into this rank's staging and says where it is (the line after the peers').
void NodeCollectives::stage(const Tensor& source) {
  if (!staging_.defined() || staging_.nbytes() < source.nbytes())
    staging_ =
        memory_->empty({static_cast<int64_t>(std::max<size_t>(source.nbytes(), 1))}, DType::kU8);
  if (source.nbytes()) std::memcpy(staging_.raw_data(), source.raw_data(), source.nbytes());
  const SharedRef ref = *memory_->find(staging_.raw_data());
  int64_t* line = control_.data<int64_t>() + kLine * size_;
  line[0] = ref.fd;
  line[1] = ref.segment_bytes;
  line[2] = ref.offset;
}

const char* NodeCollectives::staging_of(int rank) {
  if (rank == rank_) return static_cast<const char*>(staging_.raw_data());
  const int64_t* line = reinterpret_cast<const int64_t*>(peer_control_[rank]) + kLine * size_;
  return memory_->address(rank, SharedRef{line[0], line[1], line[2]});
}

// Moves `op` as far as it can go without waiting; true once it is complete on this rank.
bool NodeCollectives::advance(Op& op) {
  const int64_t base = kPhases * op.number;
  const size_t element = dtype_size(op.input.dtype());
  if (op.phase == 0) {
    stage(op.input);
    op.phase = kStaged;
    signal(base + kStaged);
  }
  if (op.phase == kStaged) {
    if (!everyone_reached(base + kStaged)) return false;
    if (op.kind == Op::Kind::kAllGather) {
      const size_t block = op.input.nbytes();
      for (int q = 0; q < size_; ++q)
        if (block)
          std::memcpy(static_cast<char*>(op.output.raw_data()) + q * block, staging_of(q), block);
      op.phase = kRead;
      signal(base + kRead);
    } else {
      // This rank's block of the result, summed over every rank's staging in rank order.
      const int64_t elements = op.input.numel();
      const int64_t first = op.block_begin(elements, size_, rank_);
      const int64_t count = op.block_begin(elements, size_, rank_ + 1) - first;
      std::vector<const char*> inputs;
      for (int q = 0; q < size_; ++q) inputs.push_back(staging_of(q) + first * element);
      char* out = op.kind == Op::Kind::kAllReduce
                      ? static_cast<char*>(op.output.raw_data()) + first * element
                      : static_cast<char*>(op.output.raw_data());
      if (count) reduce_in_order(op.input.dtype(), out, inputs, count, op.reduce);
      if (op.kind == Op::Kind::kAllReduce) {
        // Peers gather this block from the staging, which held this rank's input there.
        if (count)
          std::memcpy(static_cast<char*>(staging_.raw_data()) + first * element, out,
                      count * element);
        op.phase = kReduced;
        signal(base + kReduced);
      } else {
        op.phase = kRead;
        signal(base + kRead);
      }
    }
  }
  if (op.phase == kReduced) {
    if (!everyone_reached(base + kReduced)) return false;
    const int64_t elements = op.input.numel();
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      const int64_t first = op.block_begin(elements, size_, q);
      const int64_t count = op.block_begin(elements, size_, q + 1) - first;
      if (count)
        std::memcpy(static_cast<char*>(op.output.raw_data()) + first * element,
                    staging_of(q) + first * element, count * element);
    }
    op.phase = kRead;
    signal(base + kRead);
  }
  // Complete once every peer has read what it needed of this rank's staging.
  return everyone_reached(base + kRead);
}

void NodeCollectives::advance() {
  while (!queue_.empty()) {
    Op& op = *queue_.front();
    if (!advance(op)) return;
    op.done = true;
    queue_.pop_front();
  }
}

NodeCollectives::Step NodeCollectives::enqueue(std::shared_ptr<Op> op) {
  op->number = ++started_;
  queue_.push_back(op);
  advance();
  return [this, op] {
    if (!op->done) advance();
    return op->done;
  };
}

NodeCollectives::Step NodeCollectives::all_reduce(Tensor tensor, ReduceOp op) {
  auto state = std::make_shared<Op>();
  state->kind = Op::Kind::kAllReduce;
  state->input = tensor;
  state->output = tensor;
  state->reduce = op;
  return enqueue(std::move(state));
}

NodeCollectives::Step NodeCollectives::reduce_scatter(Tensor input, Tensor output, ReduceOp op) {
  auto state = std::make_shared<Op>();
  state->kind = Op::Kind::kReduceScatter;
  state->input = input;
  state->output = output;
  state->reduce = op;
  return enqueue(std::move(state));
}

NodeCollectives::Step NodeCollectives::all_gather(Tensor input, Tensor output) {
  auto state = std::make_shared<Op>();
  state->kind = Op::Kind::kAllGather;
  state->input = input;
  state->output = output;
  return enqueue(std::move(state));
}

}  // namespace tandem::comm
