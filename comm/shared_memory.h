// Memory the ranks of one node share. Each rank allocates tensors from its own segments (memfd,
// added as needed) and the other ranks of the group map those segments, so expert dispatch and
// combine write and read each other's rows in place: one copy per byte and no staging buffer,
// the CPU counterpart of DeepEP's NVLink buffers. A rank maps a peer's segment by opening
// /proc/<pid>/fd/<fd>, which Linux allows between processes that may trace each other (the
// permission Open MPI's single-copy transport also needs).
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "runtime/core/choices.h"

namespace tandem::comm {

// A place in one rank's shared memory, as it travels to peers (three int64).
struct SharedRef {
  int64_t fd = -1;
  int64_t segment_bytes = 0;
  int64_t offset = 0;
};

class NodeSharedMemory final : public Allocator,
                               public std::enable_shared_from_this<NodeSharedMemory> {
 public:
  // Collective over `group`. Null when some rank cannot map another's memory (ranks on different
  // nodes, or a kernel that forbids it); every rank then returns null, and *why_not names the
  // first rank that failed (with the system's reason on that rank).
  // `timeout_ms` bounds the waits of exchanges in this memory (comm.timeout_s).
  static std::shared_ptr<NodeSharedMemory> open(Communicator& group, std::string* why_not,
                                                int timeout_ms = 300000);

 private:
  struct OpenedByOpen {};  // only open() can name it, so only open() builds one

 public:
  NodeSharedMemory(OpenedByOpen, int rank, int timeout_ms);
  ~NodeSharedMemory() override;
  NodeSharedMemory(const NodeSharedMemory&) = delete;
  NodeSharedMemory& operator=(const NodeSharedMemory&) = delete;

  // A CPU tensor in this rank's shared memory; peers can reach it through find() and address().
  Tensor empty(Shape shape, DType dtype);
  // Where `pointer` lies in this rank's shared memory, or nothing if it is not in it.
  std::optional<SharedRef> find(const void* pointer) const;
  // The address of `ref` of group rank `rank` in this process (its segment mapped on first use).
  char* address(int rank, const SharedRef& ref);
  size_t segment_bytes_total() const;
  int group_rank() const { return rank_; }
  int group_size() const { return static_cast<int>(pids_.size()); }
  pid_t pid_of(int rank) const { return pids_.at(rank); }
  int timeout_ms() const { return timeout_ms_; }

  void* allocate(size_t bytes) override;
  void deallocate(void* pointer, size_t bytes) override;

 private:
  struct Segment {
    int fd = -1;
    size_t bytes = 0;
    char* base = nullptr;
    std::map<size_t, size_t> free;  // offset → length, coalesced
  };
  Segment& add_segment(size_t bytes);
  Segment* segment_of(const void* pointer) const;

  int rank_;
  int timeout_ms_;
  std::vector<pid_t> pids_;
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Segment>> own_;
  std::map<std::pair<int, int64_t>, std::pair<char*, size_t>> peers_;  // (rank, fd) → mapping
};

// What comm.expert_exchange asks for on `group`: its shared memory, or null to move rows as
// messages ("messages", or "auto" where the ranks cannot share memory; nodes simulated with
// ranks_per_node > 0 count as nodes). "shared_memory" where that is impossible is an error naming
// the fix. *why_not says why the result is null. Collective over `group`.
std::shared_ptr<NodeSharedMemory> shared_memory_for_rows(Communicator& group, ExpertExchange mode,
                                                         int ranks_per_node, int timeout_ms,
                                                         std::string* why_not);

}  // namespace tandem::comm
