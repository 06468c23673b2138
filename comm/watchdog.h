// The hang watchdog. Each rank records in the store which operation of which group it entered
// last; a wait that passes its deadline reads those records and reports the ranks that never
// arrived, instead of hanging silently.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/store.h"

namespace tandem::comm {

struct OpRecord {
  std::string op;     // "all_reduce"
  std::string group;  // communicator name
  uint64_t seq = 0;   // per-group sequence number, 1-based
  size_t bytes = 0;
  std::vector<int> members;  // world ranks of the group
};

class Watchdog {
 public:
  // store may be null (single process, or no out-of-band channel): reports then say so.
  Watchdog(std::shared_ptr<StoreClient> store, int world_rank, int timeout_ms);
  int timeout_ms() const { return timeout_ms_; }
  void enter(const OpRecord& op);
  // Polls until poll() is true, sleeping progressively longer (never burning a core for long);
  // past the deadline throws CommTimeout with the report.
  void wait(const std::function<bool()>& poll, const OpRecord& op);
  std::string report(const OpRecord& op, double waited_seconds);

 private:
  std::shared_ptr<StoreClient> store_;
  int world_rank_;
  int timeout_ms_;
};

}  // namespace tandem::comm
