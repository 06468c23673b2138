// The single-process training loop: sample a global batch, forward/backward through the model,
// balance the routers, clip, step AdamW, report, evaluate on held-out data.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "runtime/core/config.h"
#include "runtime/model/model_chunk.h"
#include "runtime/train/data.h"
#include "runtime/train/optimizer.h"

namespace tandem {

struct TrainSummary {
  int64_t steps = 0;
  std::vector<double> losses;                           // mean training loss per step
  std::vector<std::pair<int64_t, double>> eval_losses;  // (step, mean held-out loss)
  double tokens_per_second = 0;
  int64_t params = 0;
  double flops_per_token = 0;
  bool fp8 = false;
  kernels::Fp8Stats fp8_stats;  // every quantisation of the run (training steps only)
  nlohmann::json to_json(const Config& config) const;
};

class Trainer {
 public:
  explicit Trainer(const Config& config);
  TrainSummary run();
  // One optimizer step on global batch `step`; returns the mean training loss.
  double train_step(int64_t step);
  // Mean loss over train.eval_batches held-out batches.
  double evaluate();
  ModelChunk& model() { return model_; }

 private:
  Config config_;
  Dataset dataset_;
  DataLoader loader_;
  ModelChunk model_;
  AdamW optimizer_;
  double last_grad_norm_ = 0;
  kernels::Fp8Stats last_fp8_, total_fp8_;
};

}  // namespace tandem
