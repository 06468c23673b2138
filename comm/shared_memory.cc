// Shared segments: memfd files mapped here and, through /proc/<pid>/fd, by the group's peers.
// Allocation is first fit over each segment's coalesced free list; segments are never returned
// while the object lives, so a peer's mapping stays valid for every reference it is given.
#include "comm/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>

#include "comm/bootstrap.h"
#include "comm/topology.h"

namespace tandem::comm {

namespace {

constexpr size_t kAlignment = 256;                  // rows and vectors never straddle a line
constexpr size_t kSegmentBytes = size_t{64} << 20;  // pages are only backed once touched
constexpr size_t kSegmentGranule = size_t{2} << 20;

size_t round_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

}  // namespace

NodeSharedMemory::NodeSharedMemory(OpenedByOpen, int rank, int timeout_ms)
    : rank_(rank), timeout_ms_(timeout_ms) {}

NodeSharedMemory::~NodeSharedMemory() {
  for (auto& [key, mapping] : peers_) munmap(mapping.first, mapping.second);
  for (auto& segment : own_) {
    munmap(segment->base, segment->bytes);
    close(segment->fd);
  }
}

std::shared_ptr<NodeSharedMemory> NodeSharedMemory::open(Communicator& group, std::string* why_not,
                                                         int timeout_ms) {
  const int size = group.size(), rank = group.rank();
  auto memory = std::make_shared<NodeSharedMemory>(OpenedByOpen{}, rank, timeout_ms);
  const std::string node = node_identity();
  // The first bytes of the first segment hold a token that peers read back to prove the mapping.
  // A failure here is only reported after the collective steps, so that every rank agrees.
  std::string failure;
  Segment* first = nullptr;
  int64_t token = 0;
  try {
    first = &memory->add_segment(kSegmentBytes);
    token = static_cast<int64_t>(std::hash<std::string>{}(
        node + std::to_string(getpid()) + '|' +
        std::to_string(std::chrono::steady_clock::now().time_since_epoch().count())));
    std::memcpy(first->base, &token, sizeof token);
    first->free.clear();
    first->free.emplace(kAlignment, first->bytes - kAlignment);
  } catch (const Error& error) {
    failure = error.what();
  }

  constexpr int kFields = 5;
  Tensor mine = Tensor::empty({kFields}, DType::kI64);
  int64_t* m = mine.data<int64_t>();
  m[0] = static_cast<int64_t>(std::hash<std::string>{}(node));
  m[1] = getpid();
  m[2] = first ? first->fd : -1;
  m[3] = first ? static_cast<int64_t>(first->bytes) : 0;
  m[4] = token;
  Tensor all = Tensor::empty({static_cast<int64_t>(size) * kFields}, DType::kI64);
  group.all_gather(mine, all).wait();
  const int64_t* a = all.data<int64_t>();
  int other_nodes = 0;
  for (int r = 0; r < size; ++r) other_nodes += a[r * kFields] != a[0];
  if (other_nodes > 0) {
    if (why_not) *why_not = "the group's ranks are not all on one node";
    return nullptr;
  }
  for (int r = 0; r < size; ++r) memory->pids_.push_back(static_cast<pid_t>(a[r * kFields + 1]));

  for (int r = 0; r < size && failure.empty(); ++r) {
    if (r == rank) continue;
    if (a[r * kFields + 2] < 0) {
      failure = "rank " + std::to_string(r) + " has no shared memory to map";
      break;
    }
    try {
      int64_t seen = 0;
      const SharedRef ref{a[r * kFields + 2], a[r * kFields + 3], 0};
      std::memcpy(&seen, memory->address(r, ref), sizeof seen);
      if (seen != a[r * kFields + 4])
        failure = "the memory mapped for rank " + std::to_string(r) + " is not that rank's";
    } catch (const Error& error) {
      failure = error.what();
    }
  }
  const int first_failing =
      static_cast<int>(all_reduce_value(group, failure.empty() ? size : rank, ReduceOp::kMin));
  if (first_failing < size) {
    if (why_not) {
      *why_not = "rank " + std::to_string(first_failing) +
                 " of the group cannot share memory with the others";
      if (!failure.empty()) *why_not += " (here: " + failure + ")";
    }
    return nullptr;
  }
  return memory;
}

NodeSharedMemory::Segment& NodeSharedMemory::add_segment(size_t bytes) {
  auto segment = std::make_unique<Segment>();
  segment->bytes = round_up(bytes, kSegmentGranule);
  segment->fd = memfd_create("tandem-shared", MFD_CLOEXEC);
  TANDEM_CHECK(segment->fd >= 0, "memfd_create for ", segment->bytes,
               " bytes of shared memory failed: ", std::strerror(errno));
  if (ftruncate(segment->fd, static_cast<off_t>(segment->bytes)) != 0) {
    const int error = errno;
    close(segment->fd);
    TANDEM_CHECK(false, "sizing a shared-memory segment to ", segment->bytes,
                 " bytes failed: ", std::strerror(error));
  }
  void* base = mmap(nullptr, segment->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, segment->fd, 0);
  if (base == MAP_FAILED) {
    const int error = errno;
    close(segment->fd);
    TANDEM_CHECK(false, "mapping a shared-memory segment of ", segment->bytes,
                 " bytes failed: ", std::strerror(error));
  }
  segment->base = static_cast<char*>(base);
  segment->free.emplace(0, segment->bytes);
  own_.push_back(std::move(segment));
  return *own_.back();
}

void* NodeSharedMemory::allocate(size_t bytes) {
  const size_t n = round_up(std::max<size_t>(bytes, 1), kAlignment);
  std::lock_guard lock(mutex_);
  for (auto& segment : own_)
    for (auto it = segment->free.begin(); it != segment->free.end(); ++it) {
      if (it->second < n) continue;
      const auto [offset, length] = *it;
      segment->free.erase(it);
      if (length > n) segment->free.emplace(offset + n, length - n);
      return segment->base + offset;
    }
  Segment& segment = add_segment(std::max(kSegmentBytes, n));
  const size_t length = segment.free.begin()->second;
  segment.free.clear();
  if (length > n) segment.free.emplace(n, length - n);
  return segment.base;
}

void NodeSharedMemory::deallocate(void* pointer, size_t bytes) {
  std::lock_guard lock(mutex_);
  Segment* segment = segment_of(pointer);
  TANDEM_CHECK(segment != nullptr, "freeing memory that is not in this rank's shared segments");
  size_t offset = static_cast<size_t>(static_cast<char*>(pointer) - segment->base);
  size_t length = round_up(std::max<size_t>(bytes, 1), kAlignment);
  auto next = segment->free.lower_bound(offset);
  if (next != segment->free.begin()) {
    auto previous = std::prev(next);
    if (previous->first + previous->second == offset) {
      offset = previous->first;
      length += previous->second;
      segment->free.erase(previous);
    }
  }
  if (next != segment->free.end() && offset + length == next->first) {
    length += next->second;
    segment->free.erase(next);
  }
  segment->free.emplace(offset, length);
}

NodeSharedMemory::Segment* NodeSharedMemory::segment_of(const void* pointer) const {
  const char* p = static_cast<const char*>(pointer);
  for (const auto& segment : own_)
    if (p >= segment->base && p < segment->base + segment->bytes) return segment.get();
  return nullptr;
}

Tensor NodeSharedMemory::empty(Shape shape, DType dtype) {
  return Tensor::empty(std::move(shape), dtype, shared_from_this());
}

std::optional<SharedRef> NodeSharedMemory::find(const void* pointer) const {
  std::lock_guard lock(mutex_);
  const Segment* segment = segment_of(pointer);
  if (!segment) return std::nullopt;
  return SharedRef{segment->fd, static_cast<int64_t>(segment->bytes),
                   static_cast<const char*>(pointer) - segment->base};
}

char* NodeSharedMemory::address(int rank, const SharedRef& ref) {
  std::lock_guard lock(mutex_);
  TANDEM_CHECK(ref.offset >= 0 && ref.offset <= ref.segment_bytes,
               "shared-memory reference past its segment (offset ", ref.offset, " of ",
               ref.segment_bytes, " bytes)");
  if (rank == rank_) {
    for (const auto& segment : own_)
      if (segment->fd == ref.fd) return segment->base + ref.offset;
    TANDEM_CHECK(false, "no shared segment with fd ", ref.fd, " in this rank");
  }
  auto it = peers_.find({rank, ref.fd});
  if (it == peers_.end()) {
    const std::string path =
        "/proc/" + std::to_string(pids_.at(rank)) + "/fd/" + std::to_string(ref.fd);
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    TANDEM_CHECK(fd >= 0, "cannot open rank ", rank, "'s shared memory at ", path, ": ",
                 std::strerror(errno),
                 " (the kernel must let the ranks trace each other, as for Open MPI's CMA)");
    void* base = mmap(nullptr, static_cast<size_t>(ref.segment_bytes), PROT_READ | PROT_WRITE,
                      MAP_SHARED, fd, 0);
    const int error = errno;
    close(fd);
    TANDEM_CHECK(base != MAP_FAILED, "cannot map rank ", rank, "'s shared memory (", path, ", ",
                 ref.segment_bytes, " bytes): ", std::strerror(error));
    it = peers_
             .emplace(std::pair{rank, ref.fd},
                      std::pair{static_cast<char*>(base), static_cast<size_t>(ref.segment_bytes)})
             .first;
  }
  return it->second.first + ref.offset;
}

std::shared_ptr<NodeSharedMemory> shared_memory_for_rows(Communicator& group, ExpertExchange mode,
                                                         int ranks_per_node, int timeout_ms,
                                                         std::string* why_not) {
  std::string reason = "comm.expert_exchange = \"messages\"";
  std::shared_ptr<NodeSharedMemory> shared;
  if (mode != ExpertExchange::kMessages) {
    // Simulated nodes need no exchange to be known; real ones, open() tells apart itself.
    const int nodes = ranks_per_node > 0 ? discover_topology(group, ranks_per_node).nodes : 1;
    if (nodes > 1)
      reason = "the group spans " + std::to_string(nodes) + " nodes";
    else
      shared = NodeSharedMemory::open(group, &reason, timeout_ms);
  }
  TANDEM_CONFIG_CHECK(
      shared || mode != ExpertExchange::kSharedMemory,
      "comm.expert_exchange = \"shared_memory\" is not possible here: ", reason,
      "; set comm.expert_exchange = \"messages\" (or \"auto\", which picks messages ",
      "in this case)");
  if (why_not) *why_not = shared ? "" : reason;
  return shared;
}

size_t NodeSharedMemory::segment_bytes_total() const {
  std::lock_guard lock(mutex_);
  size_t total = 0;
  for (const auto& segment : own_) total += segment->bytes;
  return total;
}

}  // namespace tandem::comm
