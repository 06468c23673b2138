// The live page for those without Grafana: /status on the metrics port, one self-contained HTML
// document (no scripts, fonts or styles from elsewhere; charts are inline SVG drawn here) that the
// browser reloads every few seconds: the job's state, loss and held-out loss, tokens/s, every
// rank's step split into compute and waits with stragglers marked, and the per-expert load.
// The training thread feeds it (update, record_evaluation, record_expert_load) and the HTTP
// server's threads render it; a mutex keeps the two apart, and rendering happens off the
// training thread.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "monitoring/control_board.h"

namespace tandem::monitoring {

struct StatusPageIdentity {
  std::string job = "tandem";  // monitoring.job
  std::string config_path;
  std::string node;           // where rank 0 runs
  int64_t restart_count = 0;  // of this attempt
  int refresh_seconds = 5;
};

class StatusPage {
 public:
  explicit StatusPage(StatusPageIdentity identity);

  // Every status the trainer publishes (after each step, on pause, resume and at the end).
  void update(const JobStatus& status);
  void record_evaluation(int64_t step, double loss);
  // Tokens routed to each expert of `layer` in the last step (the global batch's).
  void record_expert_load(int64_t layer, const std::vector<int64_t>& tokens);

  std::string render() const;

  // Points kept per curve; beyond it every other point is dropped, so a long run's curve keeps
  // its shape in bounded memory.
  static constexpr size_t kMaxPoints = 1024;

 private:
  struct Point {
    double step, value;
  };
  static void append(std::vector<Point>& curve, Point point);

  const StatusPageIdentity identity_;
  mutable std::mutex mutex_;
  JobStatus status_;
  std::vector<Point> loss_, eval_loss_, tokens_per_second_;
  std::vector<int64_t> expert_layers_;
  std::vector<std::vector<double>> expert_load_;  // [layer][expert], summed over the run
  int64_t expert_steps_ = 0;
};

// What tandem-launch serves on /status when rank 0 does not answer: the last page rank 0 gave, with
// its state replaced by `state_text` ("restarting (attempt N)", "not answering") and the reason
// under it; a page of its own when none was had yet.
std::string stale_page(const std::string& last_page, const std::string& state_text,
                       const std::string& why);

}  // namespace tandem::monitoring
