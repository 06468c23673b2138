// The training loop (steps, progress lines, evaluation, the step boundary where every rank applies
// the same stop, pause, checkpoint and learning-rate commands, the summary) over a TrainEngine,
// and the single-process engine: sample a global batch, forward/backward through the whole model,
// balance the routers, clip, step AdamW.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <memory>
#include <nlohmann/json.hpp>

#include "monitoring/control_board.h"
#include "runtime/core/config.h"
#include "runtime/model/model_chunk.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/data.h"
#include "runtime/train/optimizer.h"
#include "runtime/train/step_boundary.h"
#include "runtime/train/step_log.h"
#include "runtime/train/train_engine.h"

namespace tandem {

struct TrainSummary {
  int64_t steps = 0;
  int64_t first_step = 0;  // steps already taken when this run started (a resumed checkpoint's)
  bool stopped = false;    // stopped on request before train.steps (after a checkpoint)
  bool stopped_by_control = false;         // by the control service's Stop (and no SIGTERM): exit 0
  nlohmann::json checkpoints = nullptr;    // CheckpointWriter's figures, when checkpoints are on
  nlohmann::json step_boundary = nullptr;  // what the boundary's agreement cost, and pauses
  std::vector<double> losses;              // mean training loss per step
  std::vector<std::pair<int64_t, double>> eval_losses;  // (step, mean held-out loss)
  double tokens_per_second = 0;
  int64_t params = 0;
  double flops_per_token = 0;
  bool fp8 = false;
  kernels::Fp8Stats fp8_stats;  // every quantisation of the run's training steps (rank 0's own
                                // in a multi-rank run)
  nlohmann::json engine_fields = nlohmann::json::object();  // TrainEngine::summary_fields
  nlohmann::json to_json(const Config& config) const;
};

class SingleProcessEngine final : public TrainEngine {
 public:
  // Reads `data` (an embedding program's source) or, when null, data.path's files.
  explicit SingleProcessEngine(const Config& config,
                               std::shared_ptr<const DataSource> data = nullptr);
  StepReport train_step(int64_t step) override;
  double evaluate() override;
  TrainingState state() override;
  void set_steps_taken(int64_t steps) override { optimizer_.set_steps_taken(steps); }
  nlohmann::json grid_description() const override;
  std::vector<int64_t> expert_load_layers() const override;
  ModelChunk& model() { return model_; }

 private:
  Config config_;
  Device device_;  // where the model's tensors live and its kernels run (train.device)
  DataLoader loader_;
  ModelChunk model_;
  AdamW optimizer_;
};

// What each training step did, as the trainer's observers see it (on every rank).
struct StepRecord {
  int64_t step = 0;                        // optimizer steps taken after it (1 for the first)
  double loss = 0, lr = 0, grad_norm = 0;  // lr: what this rank's optimizer used
  int64_t tokens = 0;
  double seconds = 0;          // the step, with its boundary work (checkpoint copy, agreement)
  bool checkpoint = false;     // a checkpoint was started at its end
  StepReport report;           // what the engine said of it (this rank's traffic, expert load)
  RankStepTimes times;         // this rank's compute and waits on peers (the boundary's excluded)
  StragglerVerdict straggler;  // this rank's, as every rank agrees
};

// A held-out evaluation, as the trainer's observers see it (on every rank).
struct EvaluationRecord {
  int64_t step = 0;  // after which it ran
  double loss = 0;
  double seconds = 0;
};

class Trainer {
 public:
  // The single-process engine.
  explicit Trainer(const Config& config);
  Trainer(const Config& config, std::unique_ptr<TrainEngine> engine);
  TrainSummary run();
  // One optimizer step on global batch `step`; returns the mean training loss.
  double train_step(int64_t step) { return engine_->train_step(step).loss; }
  double evaluate() { return engine_->evaluate(); }
  TrainEngine& engine() { return *engine_; }
  // Appends every step and evaluation to `log` (when this engine reports); `restart` is the
  // attempt number written with each step.
  void set_step_log(std::unique_ptr<StepLog> log, int64_t restart) {
    step_log_ = std::move(log), restart_ = restart;
  }
  // Writes checkpoints every checkpoint.interval steps, after the last step and when stopped.
  void set_checkpoints(std::unique_ptr<CheckpointWriter> writer) {
    checkpoints_ = std::move(writer);
  }
  // Asked on every rank at every step boundary; when any rank answers true, every rank stops
  // there together (after a checkpoint, when they are on).
  void set_stop_request(std::function<bool()> requested) { stop_requested_ = std::move(requested); }
  // The control service's board, on the rank that serves it (rank 0; null elsewhere): its
  // commands are applied by every rank at the same step boundary, and the job's status is
  // published on it after every step.
  void set_control(monitoring::ControlBoard* board) { control_ = board; }
  // Called after every step, on every rank.
  void add_step_observer(std::function<void(const StepRecord&)> observer) {
    step_observers_.push_back(std::move(observer));
  }
  // Called with every status the trainer publishes (after each step, on pause, resume and at the
  // end), on every rank; the control service's board gets the same on rank 0.
  void add_status_observer(std::function<void(const monitoring::JobStatus&)> observer) {
    status_observers_.push_back(std::move(observer));
  }
  // Called after every evaluation, on every rank.
  void add_evaluation_observer(std::function<void(const EvaluationRecord&)> observer) {
    evaluation_observers_.push_back(std::move(observer));
  }
  // Called with the checkpoint writer's running totals after every step boundary's checkpoint
  // work and after the last commit, on every rank (never when checkpoints are off).
  void add_checkpoint_observer(std::function<void(const CheckpointWriter::Stats&)> observer) {
    checkpoint_observers_.push_back(std::move(observer));
  }

 private:
  Config config_;
  std::unique_ptr<TrainEngine> engine_;
  std::unique_ptr<StepLog> step_log_;
  int64_t restart_ = 0;
  std::unique_ptr<CheckpointWriter> checkpoints_;
  std::function<bool()> stop_requested_;
  std::vector<std::function<void(const StepRecord&)>> step_observers_;

  // The control service's commands, applied at the boundary after `done` steps.
  void apply(const BoundaryDecision& decision,
             std::vector<std::shared_ptr<monitoring::Command>>& commands, int64_t done, bool last,
             bool paused);
  // Keeps every rank at the boundary after `done` steps until Resume or Stop; returns whether
  // to stop. `saved` is the step of the checkpoint saved at this boundary (-1: none).
  bool pause(StepBoundary& boundary, std::vector<std::shared_ptr<monitoring::Command>> pausers,
             int64_t done, int64_t& saved);
  // Saves checkpoint `done` (its Checkpoint commands are answered when it is committed).
  void save_checkpoint(int64_t done);
  void answer_checkpoint_waiters(int64_t step, bool committed, const std::string& path);
  void publish(monitoring::JobStatus::State state);
  // Answers what still waits once the run is over.
  void answer_at_end(const TrainSummary& summary);

  monitoring::ControlBoard* control_ = nullptr;
  monitoring::JobStatus status_;  // what the board gets next
  // Checkpoint commands waiting for the commit of their step, Stop commands for the run's end.
  std::vector<std::pair<int64_t, std::shared_ptr<monitoring::Command>>> checkpoint_waiters_;
  std::vector<std::shared_ptr<monitoring::Command>> stop_waiters_;
  RankStepTimes my_times_;  // this rank's last training step, for the agreement
  std::unique_ptr<StragglerDetector> stragglers_;
  // Names and clears stragglers from the agreement's times; fills status_.ranks.
  void watch_stragglers(const BoundaryDecision& decision);
  double paused_seconds_ = 0;  // of this run, left out of rates and ETAs
  bool stopped_by_control_ = false, stopped_by_signal_ = false;

  std::vector<std::function<void(const EvaluationRecord&)>> evaluation_observers_;
  std::vector<std::function<void(const monitoring::JobStatus&)>> status_observers_;
  std::vector<std::function<void(const CheckpointWriter::Stats&)>> checkpoint_observers_;
};

}  // namespace tandem
