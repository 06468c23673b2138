// The flight recorder: every operation this rank enters on any group, kept in a fixed ring in
// process memory (no store traffic), with each group's last entered and completed sequence
// number. It is read only when something hangs: a rank whose wait passes comm.timeout_s asks its
// peers (through the store) to publish theirs, and each rank writes its own to a file, so the
// operator sees where every rank stood — the record PyTorch and NCCL users ask for most.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace tandem::comm {

// What a communicator tells the recorder about an operation it starts.
struct OpRecord {
  std::string op;     // "all_reduce", "recv"
  std::string group;  // communicator name
  uint64_t seq = 0;   // per-group sequence number of a collective, 1-based; 0 for send/recv
  size_t bytes = 0;
  // World ranks expected to take part: the group's members, or the peer of a send/recv.
  std::shared_ptr<const std::vector<int>> members;
  uint64_t ticket = 0;  // set by FlightRecorder::enter
};

// A group's progress as one rank saw it.
struct GroupProgress {
  uint64_t entered_seq = 0;
  std::string entered_op;
  uint64_t completed_seq = 0;
};

// Another rank's published record, as far as a report needs it.
struct PeerRecord {
  int rank = -1;
  double written_s = 0;    // wall clock (unix s) when the rank wrote it
  bool timed_out = false;  // written by a rank done reporting a timeout of its own
  std::map<std::string, GroupProgress> groups;
  std::string oldest_pending;  // "all_reduce #3 on group 'world' (1024 bytes) for 2.1 s", or ""
};

class FlightRecorder {
 public:
  explicit FlightRecorder(int world_rank, size_t capacity = 512);
  int world_rank() const { return world_rank_; }
  // Records op as entered and returns its ticket (also written into op.ticket).
  uint64_t enter(OpRecord& op);
  void complete(const OpRecord& op);
  uint64_t entered_total() const;
  // The whole record as text: one line per group, then the last operations, oldest first.
  // timed_out marks the record of a rank that is reporting a timeout of its own; pending_only
  // keeps, of the operations, only those still pending (what peers need: kilobytes, not the
  // whole ring, when thousands of ranks read each other's).
  std::string serialize(bool timed_out = false, bool pending_only = false) const;
  static PeerRecord parse(const std::string& text);

 private:
  struct Entry {
    uint64_t ticket = 0;
    std::string op, group;
    uint64_t seq = 0;
    size_t bytes = 0;
    double entered_s = 0, completed_s = -1;  // seconds since the epoch (wall clock)
  };
  mutable std::mutex mutex_;  // the heartbeat thread serializes while the main thread records
  int world_rank_;
  std::vector<Entry> ring_;
  uint64_t next_ticket_ = 1;
  std::map<std::string, GroupProgress> groups_;
};

}  // namespace tandem::comm
