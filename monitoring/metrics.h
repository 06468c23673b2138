// One rank's metrics: a prometheus-cpp registry holding every family of metric_catalog.h, each
// with all of its series from construction (a family without series would be missing from the
// exposition), and the updates the trainer's observers make. Values not measured yet are NaN.
// Every update takes the registry's snapshot lock, and so does every scrape: a scrape never
// shows one step's loss next to another step's step number.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tandem::monitoring {

// Who this process is: labels of every series, and what it knows at startup.
struct RankIdentity {
  int rank = 0;
  std::string node;           // host name
  int64_t restart_count = 0;  // TANDEM_RESTART_COUNT: restarts of the job before this attempt
};

// Where the rank sits in the grid, known once its engine exists: the series whose labels need it.
struct RankPlace {
  int stage = 0;                       // its pipeline rank
  std::vector<int64_t> expert_layers;  // MoE layers whose global expert load it reports
  int64_t experts_per_layer = 0;       // routed experts of each
};

// What one training step did, as RankMetrics records it.
struct StepValues {
  int64_t step = 0;  // the job's optimizer step count after it
  double loss = 0, learning_rate = 0, grad_norm = 0;
  int64_t tokens = 0;  // of the global batch
  double seconds = 0;
  double flops_per_second = 0;  // this rank's share of the job's training FLOP/s
  double bubble_ratio = 0;
  int64_t dispatch_bytes = 0, combine_bytes = 0;
  double dispatch_exposed_seconds = 0, combine_exposed_seconds = 0;
  int64_t pipeline_sent_bytes = 0, pipeline_received_bytes = 0;
  // Tokens per expert over the global batch, one row per RankPlace::expert_layers entry (or
  // none, when this rank reports no expert load).
  std::vector<std::vector<int64_t>> expert_tokens;
  int64_t fp8_values = 0, fp8_saturated = 0;
  // This rank's step split into its own compute and its waits on peers, and the straggler
  // detector's verdict on it.
  double compute_seconds = 0, all_to_all_wait_seconds = 0, pipeline_wait_seconds = 0,
         sync_wait_seconds = 0;
  bool straggler = false;
  double relative_speed = 1;
};

// The checkpoint writer's running totals (CheckpointWriter::Stats); RankMetrics turns their
// changes into counts and durations.
struct CheckpointTotals {
  int64_t committed = 0, failed = 0;
  int64_t last_committed_step = -1;
  double in_step_seconds = 0;  // copy + wait + poll + commit: the training thread's share
  double write_seconds = 0;    // background writes, booked when each checkpoint is committed
  uint64_t bytes = 0;
};

enum class CommFaultKind { kTimeout, kPeerLost, kStoreLost };

class RankMetrics {
 public:
  explicit RankMetrics(const RankIdentity& identity);
  ~RankMetrics();
  RankMetrics(const RankMetrics&) = delete;
  RankMetrics& operator=(const RankMetrics&) = delete;

  // Adds the series that depend on the grid (the stage's bubble, the expert loads). Once.
  void place(const RankPlace& place);
  void set_peak_flops(double flops_per_second);
  void record_step(const StepValues& step);
  void record_evaluation(double loss, double seconds);
  // Called with the writer's totals at step boundaries and after its last commit.
  void record_checkpoints(const CheckpointTotals& totals);
  void record_comm_fault(CommFaultKind kind);
  // Resident memory now (/proc/self/statm); record_step reads it too.
  void update_memory();

  // The exposition in the Prometheus text format, as a scrape gets it.
  std::string exposition() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Resident bytes of this process (/proc/self/statm's second field times the page size); 0 where
// it cannot be read.
uint64_t resident_memory_bytes();

}  // namespace tandem::monitoring
