// What the training loop drives: one optimizer step on a global batch, a held-out evaluation, and
// the training state by name (what a checkpoint saves and loads).
// The single-process engine runs the whole model in one process; the parallel engine
// (parallel_engine.h) runs this rank's part of it on the process grid. Both see the same global
// batch, so one config means the same mathematics on any grid.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "kernels/fp8.h"
#include "runtime/model/block.h"
#include "runtime/train/lr_schedule.h"
#include "runtime/train/optimizer.h"

namespace tandem {

// A tensor of the training state that is not a parameter, under its global name.
struct NamedTensor {
  std::string name;  // "layers.3.ffn.router_bias"
  Tensor values;     // shares storage with the live tensor
};

// What a checkpoint of one rank holds, under names that are the same on every grid. Every tensor
// shares storage with the live state: a writer reads them; a loader copies into them, then calls
// TrainEngine::set_steps_taken. The data loader keeps no position of its own: global batch b is a
// pure function of (seed, b), and the next batch to train on is steps_taken.
struct TrainingState {
  std::vector<Parameter*> parameters;   // whole; replicas of a parameter hold equal copies
  std::vector<NamedTensor> buffers;     // the routers' balancing biases
  std::vector<AdamW::Moments> moments;  // m and v of the parameter ranges this rank updates
  // Which of them this rank writes into a checkpoint: each parameter range (its values, m and
  // v) and each buffer is saved by exactly one of the ranks that hold it.
  std::vector<bool> saves_moments;
  std::vector<bool> saves_buffer;
  int64_t steps_taken = 0;                                 // optimizer steps so far
  std::optional<LearningRateChange> learning_rate_change;  // an operator's, saved with the rest
};

// The global batch's tokens routed to each expert of one MoE layer (top_k copies per token).
struct ExpertLoad {
  int64_t layer = 0;
  std::vector<int64_t> tokens;  // per routed expert
};

struct StepReport {
  double loss = 0;  // mean over the global batch's tokens
  double grad_norm = 0;
  double learning_rate = 0;  // what this rank's optimizer stepped with
  kernels::Fp8Stats fp8;     // this rank's quantisations during the step
  // Where this rank's step went (for metrics; zero in one process): the pipeline bubble, the
  // expert all-to-alls by direction, the pipeline messages.
  double bubble_fraction = 0;
  int64_t dispatch_bytes = 0, combine_bytes = 0;
  double dispatch_exposed_seconds = 0, combine_exposed_seconds = 0;
  int64_t pipeline_sent_bytes = 0, pipeline_received_bytes = 0;
  // This rank's waits on peers during the step (beside the all-to-alls' exposed seconds above):
  // idle or waiting for pipeline messages, and the gradient, loss and norm reductions with the
  // ZeRO-1 gather. The rest of the step is its own compute (straggler detection).
  double pipeline_wait_seconds = 0, sync_wait_seconds = 0;
  // The step's span on its device by events in the compute stream (DeviceTimer): on a GPU, from
  // the device reaching the step's start to the end of its last kernel, idle gaps included where
  // the host enqueues slower than the device runs; zero where the engine does not time it.
  double device_seconds = 0;
  // The layers of TrainEngine::expert_load_layers, in that order (empty on other ranks).
  std::vector<ExpertLoad> expert_load;
};

// Stops the run with a clear message when a step's gradient norm is not finite.
void check_grad_norm(double grad_norm, int64_t step);
// Steps run in order: train_step(step) follows exactly `step` optimizer steps, so the learning
// rate (from the step index) and AdamW's bias correction (from its count) agree after a resume.
void check_step_order(int64_t step, int64_t steps_taken);

class TrainEngine {
 public:
  virtual ~TrainEngine() = default;
  virtual StepReport train_step(int64_t step) = 0;
  // Mean held-out loss over train.eval_batches batches.
  virtual double evaluate() = 0;
  // Whether this rank prints progress (rank 0 of a multi-rank job).
  virtual bool reports() const { return true; }
  // Engine-specific fields of the run summary (grid, schedule, bubble, all-to-all...).
  virtual nlohmann::json summary_fields() const { return nlohmann::json::object(); }
  // Called once after the last step (collective in multi-rank engines).
  virtual void finish() {}
  // This rank's state, as views (see TrainingState).
  virtual TrainingState state() = 0;
  // Resumes a step count (a checkpoint's): the next train_step must then be of that step.
  virtual void set_steps_taken(int64_t steps) = 0;
  // An operator's learning-rate change (lr_schedule.h), set by every rank at the same step
  // boundary, or restored from a checkpoint; train_step steps at learning_rate(step).
  void set_learning_rate_change(std::optional<LearningRateChange> change) {
    learning_rate_change_ = change;
  }
  const std::optional<LearningRateChange>& learning_rate_change() const {
    return learning_rate_change_;
  }
  // The group of every rank of the job, over which step-boundary decisions (stop, checkpoint)
  // are agreed; null in one process.
  virtual comm::Communicator* job_world() { return nullptr; }
  // The grid this engine runs on (pp, dp, ep, zero1, schedule, world size), for checkpoints.
  virtual nlohmann::json grid_description() const = 0;
  // This rank's pipeline rank (0 in one process).
  virtual int pipeline_stage() const { return 0; }
  // The MoE layers whose global expert load this rank reports in every StepReport: one rank
  // per layer (the first data-parallel replica of its stage), so that reports summed over ranks
  // count each token once.
  virtual std::vector<int64_t> expert_load_layers() const = 0;

 private:
  std::optional<LearningRateChange> learning_rate_change_;
};

}  // namespace tandem
