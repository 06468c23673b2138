// One all-reduce (max) of [requests..., each rank's step times in its own four slots].
#include "runtime/train/step_boundary.h"

#include <algorithm>

namespace tandem {

namespace {
// Slots of the agreement. Every flag is 0 or 1, the learning rate 0 (none) or the value, which
// only the serving rank writes: the max of it and zeros is the value itself, bit for bit.
enum Slot : int64_t {
  kStopSignal,
  kStopControl,
  kPause,
  kResume,
  kCheckpoint,
  kLearningRate,
  kSlots  // then each rank's RankStepTimes
};
constexpr int64_t kTimesPerRank = 4;
}  // namespace

StepBoundary::StepBoundary(comm::Communicator* world, monitoring::ControlBoard* board,
                           std::function<bool()> stop_requested)
    : world_(world),
      board_(board),
      stop_requested_(std::move(stop_requested)),
      vector_(Tensor::empty({kSlots + kTimesPerRank * (world ? world->size() : 1)}, DType::kF64)) {}

BoundaryDecision StepBoundary::agree(const RankStepTimes& mine) {
  double* v = vector_.data<double>();
  std::fill(v, v + vector_.numel(), 0.0);
  if (stop_requested_ && stop_requested_()) v[kStopSignal] = 1;
  commands_ = board_ ? board_->take() : std::vector<std::shared_ptr<monitoring::Command>>{};
  for (const auto& command : commands_) {
    switch (command->kind()) {
      case monitoring::CommandKind::kPause:
        v[kPause] = 1;
        break;
      case monitoring::CommandKind::kResume:
        v[kResume] = 1;
        break;
      case monitoring::CommandKind::kCheckpoint:
        v[kCheckpoint] = 1;
        break;
      case monitoring::CommandKind::kSetLearningRate:
        v[kLearningRate] = command->learning_rate();
        break;
      case monitoring::CommandKind::kStop:
        v[kStopControl] = 1;
        break;
    }
  }
  const int rank = world_ ? world_->rank() : 0;
  double* my_slots = v + kSlots + kTimesPerRank * rank;
  my_slots[0] = mine.compute;
  my_slots[1] = mine.all_to_all_wait;
  my_slots[2] = mine.pipeline_wait;
  my_slots[3] = mine.sync_wait;
  if (world_) world_->all_reduce(vector_, comm::ReduceOp::kMax).wait();
  BoundaryDecision d;
  d.stop_signal = v[kStopSignal] > 0;
  d.stop_control = v[kStopControl] > 0;
  d.pause = v[kPause] > 0;
  d.resume = v[kResume] > 0;
  d.checkpoint = v[kCheckpoint] > 0;
  if (v[kLearningRate] > 0) d.learning_rate = v[kLearningRate];
  for (const double* t = v + kSlots; t < v + vector_.numel(); t += kTimesPerRank)
    d.rank_times.push_back({t[0], t[1], t[2], t[3]});
  return d;
}

}  // namespace tandem
