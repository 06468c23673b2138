// What the training loop drives: one optimizer step on a global batch, and a held-out evaluation.
// The single-process engine runs the whole model in one process; the parallel engine
// (parallel_engine.h) runs this rank's part of it on the process grid. Both see the same global
// batch, so one config means the same mathematics on any grid.
#pragma once

#include <cstdint>

#include <nlohmann/json.hpp>

#include "kernels/fp8.h"

namespace tandem {

struct StepReport {
  double loss = 0;  // mean over the global batch's tokens
  double grad_norm = 0;
  kernels::Fp8Stats fp8;  // this rank's quantisations during the step
};

// Stops the run with a clear message when a step's gradient norm is not finite.
void check_grad_norm(double grad_norm, int64_t step);

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
};

}  // namespace tandem
