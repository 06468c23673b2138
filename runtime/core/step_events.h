// What a training step did and when, event by event, so that tests can observe what the design
// promises rather than infer it from step times: a gradient reduction starts during the backward,
// weight gradients run while an expert all-to-all travels, pipeline receives are posted before
// their sends. Times are seconds on the steady clock (CLOCK_MONOTONIC, one clock for every process
// of a node), so events of different ranks on one machine can be compared. Off unless a log is
// attached (parallelism/: PipelineExecutor::set_event_log, GradientSync::set_event_log).
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

namespace tandem {

enum class StepEventKind : uint8_t {
  kInstructionBegin,     // id: index in the rank's program
  kInstructionEnd,       // id: index in the rank's program
  kReceivePosted,        // pipeline message: id = tag, peer = sender (pipeline rank)
  kSendStarted,          // pipeline message: id = tag, peer = receiver
  kAllToAllStarted,      // expert all-to-all of a chunk task: id = its number on this rank
  kAllToAllDone,         // the task saw it complete (at the latest then)
  kWeightGradientBegin,  // deferred weight-gradient work of one block, inside B or a W
  kWeightGradientEnd,
  kReductionStarted,  // gradient reduction of a bucket: id = its launch order
};

struct StepEvent {
  StepEventKind kind;
  double time_s;
  int64_t id = 0;
  int peer = -1;
};

class StepEventLog {
 public:
  static double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void record(StepEventKind kind, int64_t id = 0, int peer = -1) {
    events_.push_back({kind, now_s(), id, peer});
  }
  // Numbers all-to-alls, to pair each start with its completion.
  int64_t all_to_all_started() {
    record(StepEventKind::kAllToAllStarted, all_to_alls_);
    return all_to_alls_++;
  }
  const std::vector<StepEvent>& events() const { return events_; }
  void clear() { events_.clear(), all_to_alls_ = 0; }

 private:
  std::vector<StepEvent> events_;
  int64_t all_to_alls_ = 0;
};

// Into a log that may be absent.
inline void record_event(StepEventLog* log, StepEventKind kind, int64_t id = 0, int peer = -1) {
  if (log) log->record(kind, id, peer);
}
inline int64_t all_to_all_started(StepEventLog* log) {
  return log ? log->all_to_all_started() : 0;
}
inline void all_to_all_done(StepEventLog* log, int64_t id) {
  record_event(log, StepEventKind::kAllToAllDone, id);
}

}  // namespace tandem
