// The learning rate of a step, with an operator's change.
#include "runtime/train/lr_schedule.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "kernels/optimizer.h"
#include "runtime/core/errors.h"

namespace tandem {

namespace {
double scheduled(const TrainConfig& t, int64_t step) {
  return kernels::learning_rate_at(step, t.steps, t.warmup_steps, t.lr, t.min_lr);
}
}  // namespace

double learning_rate_at(const TrainConfig& train, int64_t step,
                        const std::optional<LearningRateChange>& change) {
  if (!change || step < change->from_step) return scheduled(train, step);
  // The ratio, not a factor computed once: at from_step it is exactly 1, so that step trains at
  // exactly the rate asked for. The schedule is positive at every step before train.steps
  // (warmup from lr/warmup, cosine to min_lr only at its end), so the ratio is finite.
  return change->learning_rate * (scheduled(train, step) / scheduled(train, change->from_step));
}

bool valid_learning_rate(double learning_rate) {
  return learning_rate > 0 && learning_rate <= 1;  // false for NaN
}

nlohmann::json learning_rate_change_to_json(const std::optional<LearningRateChange>& change) {
  if (!change) return nullptr;
  return {{"from_step", change->from_step}, {"learning_rate", change->learning_rate}};
}

std::optional<LearningRateChange> learning_rate_change_from_json(const nlohmann::json& value,
                                                                 const std::string& what) {
  if (value.is_null()) return std::nullopt;
  TANDEM_USER_CHECK(value.is_object() && value.contains("from_step") &&
                        value["from_step"].is_number_integer() &&
                        value["from_step"].get<int64_t>() >= 0 && value.contains("learning_rate") &&
                        value["learning_rate"].is_number() &&
                        valid_learning_rate(value["learning_rate"].get<double>()),
                    what,
                    ": the learning-rate change must be null or {\"from_step\": a step >= 0, "
                    "\"learning_rate\": a rate in (0, 1]}, got ",
                    value.dump());
  return LearningRateChange{value["from_step"].get<int64_t>(),
                            value["learning_rate"].get<double>()};
}

}  // namespace tandem
