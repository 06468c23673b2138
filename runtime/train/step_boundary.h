// The step boundary's agreement: between two steps every rank contributes what it was asked
// (a stop on SIGTERM; on the rank serving the control service, the operator's commands: stop,
// pause, resume, checkpoint now, a new learning rate) and its step's times (compute and waits, for
// straggler detection), and one all-reduce of a small fixed vector gives every rank the same
// decision and every rank's times, so all apply it at the same boundary.
// This is the one collective a step spends on it, whatever is asked; a paused job repeats it
// every 100 ms.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "comm/communicator.h"
#include "monitoring/control_board.h"
#include "runtime/train/straggler_detector.h"

namespace tandem {

struct BoundaryDecision {
  bool stop_signal = false;   // SIGTERM on some rank: stop, exit 4
  bool stop_control = false;  // the control service's Stop: stop, exit 0
  bool pause = false, resume = false, checkpoint = false;
  std::optional<double> learning_rate;    // SetLearningRate's value, bit for bit on every rank
  std::vector<RankStepTimes> rank_times;  // what each rank contributed, in rank order
  bool stop() const { return stop_signal || stop_control; }
};

class StepBoundary {
 public:
  // `world`: every rank of the job (null in one process); `board`: the control service's, on
  // the rank that serves it, else null; `stop_requested`: asked on every rank (may be empty).
  StepBoundary(comm::Communicator* world, monitoring::ControlBoard* board,
               std::function<bool()> stop_requested);
  // Collective over `world`. Takes this rank's requests (the board's queued commands among
  // them: see commands()) and returns what every rank agreed.
  BoundaryDecision agree(const RankStepTimes& mine);
  // The commands taken from the board by the last agree(), for the caller to apply and answer.
  std::vector<std::shared_ptr<monitoring::Command>>& commands() { return commands_; }
  // The agreement's length: a few requests and four times per rank.
  int64_t doubles() const { return vector_.numel(); }

 private:
  comm::Communicator* world_;
  monitoring::ControlBoard* board_;
  std::function<bool()> stop_requested_;
  std::vector<std::shared_ptr<monitoring::Command>> commands_;
  Tensor vector_;  // the agreement, reused every step
};

}  // namespace tandem
