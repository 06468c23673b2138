// The learning rate of every step: the configured schedule (kernels::learning_rate_at: linear
// warmup, then cosine decay to train.min_lr) and an operator's change of it while the job runs
// (the control service's SetLearningRate), which a checkpoint saves so a resumed run keeps it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "runtime/core/config.h"

namespace tandem {

// From step index `from_step` (0-based: the step that follows `from_step` optimizer steps) on,
// the schedule scaled so that step `from_step` trains at exactly `learning_rate`; later steps keep
// the schedule's shape, scaled by the same factor.
struct LearningRateChange {
  int64_t from_step = 0;
  double learning_rate = 0;
  bool operator==(const LearningRateChange&) const = default;
};

// The learning rate of step index `step`. With a change, step `from_step` gets exactly its rate
// (the schedule's value divided by itself is 1), every other step that times the schedule's
// ratio to the value at `from_step`.
double learning_rate_at(const TrainConfig& train, int64_t step,
                        const std::optional<LearningRateChange>& change);

// The values SetLearningRate accepts: those train.lr accepts, (0, 1]. NaN is outside.
bool valid_learning_rate(double learning_rate);

// {"from_step": k, "learning_rate": x} or null, as a checkpoint manifest records it; the JSON
// numbers round-trip every double exactly. from_json throws an Error naming `what` for anything
// else.
nlohmann::json learning_rate_change_to_json(const std::optional<LearningRateChange>& change);
std::optional<LearningRateChange> learning_rate_change_from_json(const nlohmann::json& value,
                                                                 const std::string& what);

}  // namespace tandem
