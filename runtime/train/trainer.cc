// Training loop, progress lines and the run summary.
#include "runtime/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "kernels/elementwise.h"
#include "kernels/optimizer.h"
#include "runtime/core/logging.h"
#include "runtime/model/model_stats.h"

namespace tandem {

namespace {
std::string format_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) return detail::concat(s / 3600, "h", (s % 3600) / 60, "m");
  if (s >= 60) return detail::concat(s / 60, "m", s % 60, "s");
  return detail::concat(s, "s");
}
}  // namespace

void check_grad_norm(double grad_norm, int64_t step) {
  TANDEM_USER_CHECK(std::isfinite(grad_norm), "step ", step,
                    ": gradient norm is not finite; lower train.lr or check the data");
}

void check_step_order(int64_t step, int64_t steps_taken) {
  TANDEM_CHECK(step == steps_taken, "train_step(", step, ") after ", steps_taken,
               " optimizer steps: steps run in order, from the count a checkpoint resumed");
}

namespace {
std::vector<ParameterSlice> whole_parameters(const std::vector<Parameter*>& params) {
  std::vector<ParameterSlice> out;
  for (Parameter* p : params) out.push_back(ParameterSlice::whole(*p));
  return out;
}
}  // namespace

SingleProcessEngine::SingleProcessEngine(const Config& config)
    : config_(config),
      dataset_(Dataset::open(config.data, config.model)),
      loader_(dataset_, config.model.seq_len, static_cast<uint64_t>(config.train.seed)),
      model_(config.model, static_cast<uint64_t>(config.train.seed),
             ChunkSpec::whole_model(config.model), config.fp8),
      optimizer_(whole_parameters(model_.parameters()), config.train) {}

StepReport SingleProcessEngine::train_step(int64_t step) {
  check_step_order(step, optimizer_.steps_taken());
  const auto& t = config_.train;
  const int64_t tokens_per_batch = t.batch_size * config_.model.seq_len;
  Tensor tokens = Tensor::empty({tokens_per_batch}, DType::kI32);
  Tensor targets = Tensor::empty({tokens_per_batch}, DType::kI32);
  loader_.fill(Split::kTrain, step, 0, t.batch_size, tokens, targets);

  for (MoeFfnBlock* moe : model_.moe_blocks()) moe->reset_expert_load();
  model_.fp8_stats() = {};
  MicroBatchState state;
  model_.forward(tokens, state, &targets, Pass::train(1.0 / static_cast<double>(tokens_per_batch)));
  const double loss = state.loss_sum / static_cast<double>(tokens_per_batch);
  model_.backward_input(Tensor(), state);
  model_.backward_weight(state);
  StepReport report;
  for (MoeFfnBlock* moe : model_.moe_blocks()) {
    moe->update_bias(moe->expert_load());
    report.expert_load.push_back({moe->layer(), moe->expert_load()});
  }
  report.loss = loss;
  report.fp8 = model_.fp8_stats();
  const std::vector<Parameter*> params = model_.parameters();
  double sum_of_squares = 0;
  for (Parameter* p : params) sum_of_squares += kernels::sum_of_squares(p->grad);
  report.grad_norm = std::sqrt(sum_of_squares);
  check_grad_norm(report.grad_norm, step);
  const double lr = kernels::learning_rate_at(step, t.steps, t.warmup_steps, t.lr, t.min_lr);
  optimizer_.step(lr, kernels::clip_coefficient(report.grad_norm, t.grad_clip));
  for (Parameter* p : params) p->grad.zero_();
  return report;
}

TrainingState SingleProcessEngine::state() {
  TrainingState out;
  out.parameters = model_.parameters();
  for (MoeFfnBlock* moe : model_.moe_blocks())
    out.buffers.push_back({moe->bias_name(), moe->bias()});
  out.moments = optimizer_.moments();
  out.saves_moments.assign(out.moments.size(), true);
  out.saves_buffer.assign(out.buffers.size(), true);
  out.steps_taken = optimizer_.steps_taken();
  return out;
}

std::vector<int64_t> SingleProcessEngine::expert_load_layers() const {
  std::vector<int64_t> layers;
  for (MoeFfnBlock* moe : model_.moe_blocks()) layers.push_back(moe->layer());
  return layers;
}

nlohmann::json SingleProcessEngine::grid_description() const {
  return {{"world_size", 1}, {"pp", 1}, {"dp", 1}, {"ep", 1}, {"zero1", false}};
}

double SingleProcessEngine::evaluate() {
  const auto& t = config_.train;
  const int64_t tokens_per_batch = t.batch_size * config_.model.seq_len;
  Tensor tokens = Tensor::empty({tokens_per_batch}, DType::kI32);
  Tensor targets = Tensor::empty({tokens_per_batch}, DType::kI32);
  double total = 0;
  for (int64_t b = 0; b < t.eval_batches; ++b) {
    loader_.fill(Split::kHeldOut, b, 0, t.batch_size, tokens, targets);
    MicroBatchState state;
    model_.forward(tokens, state, &targets, Pass::evaluate());
    total += state.loss_sum;
  }
  // In double: tokens per batch times batches may pass int64 (both are bounded, not their product).
  return total / (static_cast<double>(tokens_per_batch) * static_cast<double>(t.eval_batches));
}

Trainer::Trainer(const Config& config)
    : Trainer(config, std::make_unique<SingleProcessEngine>(config)) {}

Trainer::Trainer(const Config& config, std::unique_ptr<TrainEngine> engine)
    : config_(config), engine_(std::move(engine)) {}

TrainSummary Trainer::run() {
  const auto& t = config_.train;
  const ModelStats stats = model_stats(config_.model);
  const bool reports = engine_->reports();
  TrainSummary summary;
  summary.params = stats.params;
  summary.flops_per_token = stats.flops_per_token;
  if (reports)
    log_info("model: ", stats.params, " parameters, ", stats.active_params, " active per token, ",
             stats.flops_per_token / 1e6, " MFLOP per token (training)");

  const int64_t tokens_per_step = t.batch_size * config_.model.seq_len;
  const int64_t first_step = engine_->state().steps_taken;
  summary.first_step = first_step;
  const auto start = std::chrono::steady_clock::now();
  double train_seconds = 0;
  // Step times with and without a checkpoint at their end (the first step of a process, which
  // warms up, is left out): their difference is what a checkpoint costs the step.
  double checkpoint_step_seconds = 0, other_step_seconds = 0;
  int64_t checkpoint_steps = 0, other_steps = 0;
  int64_t step = first_step;
  for (; step < t.steps; ++step) {
    const auto step_start = std::chrono::steady_clock::now();
    const StepReport report = engine_->train_step(step);
    const double loss = report.loss;
    summary.fp8_stats.merge(report.fp8);
    // The step boundary: every rank decides the same (stop, checkpoint) here.
    const bool last = step + 1 == t.steps;
    bool stop = false;
    if (stop_requested_) {
      const bool mine = stop_requested_();
      comm::Communicator* world = engine_->job_world();
      stop = world ? comm::all_reduce_value(*world, mine ? 1 : 0, comm::ReduceOp::kMax) > 0 : mine;
    }
    bool checkpoint = false;
    if (checkpoints_) {
      checkpoints_->poll();
      const int64_t interval = config_.checkpoint.interval;
      checkpoint = last || stop || (interval > 0 && (step + 1) % interval == 0);
      if (checkpoint) checkpoints_->save(engine_->state(), step + 1);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    train_seconds += seconds;
    if (step > first_step) {
      (checkpoint ? checkpoint_step_seconds : other_step_seconds) += seconds;
      ++(checkpoint ? checkpoint_steps : other_steps);
    }
    summary.losses.push_back(loss);
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double eta = elapsed / (step + 1 - first_step) * (t.steps - step - 1);
    char line[256];
    std::snprintf(line, sizeof line,
                  "step %lld/%lld | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | "
                  "%.1f ms/step | ETA %s",
                  static_cast<long long>(step + 1), static_cast<long long>(t.steps), loss,
                  kernels::learning_rate_at(step, t.steps, t.warmup_steps, t.lr, t.min_lr),
                  report.grad_norm, tokens_per_step / seconds, seconds * 1e3,
                  format_duration(eta).c_str());
    if (config_.fp8.enabled) {
      char fp8_line[96];
      std::snprintf(fp8_line, sizeof fp8_line, " | fp8 saturated %.2e | scales %.1e..%.1e",
                    report.fp8.values ? double(report.fp8.saturated) / report.fp8.values : 0.0,
                    report.fp8.min_scale, report.fp8.max_scale);
      std::strncat(line, fp8_line, sizeof line - std::strlen(line) - 1);
    }
    if (reports) log_info(line);
    const StepRecord record{
        step + 1,
        loss,
        kernels::learning_rate_at(step, t.steps, t.warmup_steps, t.lr, t.min_lr),
        report.grad_norm,
        tokens_per_step,
        seconds,
        checkpoint,
        report};
    if (reports && step_log_)
      step_log_->step(record.step, record.loss, record.lr, record.grad_norm, record.tokens,
                      record.seconds, restart_);
    for (const auto& observer : step_observers_) observer(record);
    if (checkpoints_)
      for (const auto& observer : checkpoint_observers_) observer(checkpoints_->stats());
    if (last || (t.eval_interval > 0 && (step + 1) % t.eval_interval == 0)) {
      const auto eval_start = std::chrono::steady_clock::now();
      const double eval_loss = engine_->evaluate();
      const EvaluationRecord evaluation{
          step + 1, eval_loss,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - eval_start).count()};
      for (const auto& observer : evaluation_observers_) observer(evaluation);
      summary.eval_losses.emplace_back(step + 1, eval_loss);
      char eval_line[128];
      std::snprintf(eval_line, sizeof eval_line, "eval step %lld | held-out loss %.4f",
                    static_cast<long long>(step + 1), eval_loss);
      if (reports) log_info(eval_line);
      if (reports && step_log_) step_log_->evaluation(step + 1, eval_loss);
    }
    if (stop && !last) {
      summary.stopped = true;
      ++step;
      break;
    }
  }
  summary.steps = step;
  summary.fp8 = config_.fp8.enabled;
  if (checkpoints_) {
    checkpoints_->finish();
    const CheckpointWriter::Stats& c = checkpoints_->stats();
    for (const auto& observer : checkpoint_observers_) observer(c);
    const double checkpoint_mean =
        checkpoint_steps ? checkpoint_step_seconds / static_cast<double>(checkpoint_steps) : 0;
    const double other_mean =
        other_steps ? other_step_seconds / static_cast<double>(other_steps) : 0;
    const double in_step = c.copy_seconds + c.wait_seconds + c.poll_seconds + c.commit_seconds;
    const double per_checkpoint = c.saved ? in_step / static_cast<double>(c.saved) : 0;
    const double normal_step = other_mean > 0 ? other_mean : 0;
    // The stall as a step-time difference needs both kinds of step measured; otherwise null.
    const bool comparable = checkpoint_steps > 0 && other_steps > 0;
    summary.checkpoints = {
        {"dir", checkpoints_->dir()},
        {"saved", c.saved},
        {"committed", c.committed},
        {"failed", c.failed},
        {"last_step", c.last_committed_step},
        {"bytes_this_rank", c.bytes},
        {"copy_seconds", c.copy_seconds},
        {"wait_seconds", c.wait_seconds},
        {"poll_seconds", c.poll_seconds},
        {"commit_seconds", c.commit_seconds},
        {"write_seconds", c.write_seconds},
        {"write_bytes_per_second", c.write_seconds > 0 ? c.bytes / c.write_seconds : 0},
        {"in_step_seconds", per_checkpoint},
        {"in_step_fraction_of_step", normal_step > 0 ? per_checkpoint / normal_step : 0},
        {"checkpoint_steps_measured", checkpoint_steps},
        {"step_seconds_with_checkpoint", checkpoint_mean},
        {"step_seconds_without", other_mean},
        {"stall_seconds", comparable ? nlohmann::json(checkpoint_mean - other_mean) : nullptr},
        {"stall_fraction_of_step", comparable && other_mean > 0
                                       ? nlohmann::json((checkpoint_mean - other_mean) / other_mean)
                                       : nullptr}};
  }
  engine_->finish();
  summary.engine_fields = engine_->summary_fields();
  summary.tokens_per_second = train_seconds > 0
                                  ? static_cast<double>(tokens_per_step) *
                                        static_cast<double>(step - first_step) / train_seconds
                                  : 0;
  return summary;
}

nlohmann::json TrainSummary::to_json(const Config& config) const {
  nlohmann::json out;
  out["steps"] = steps;
  out["first_step"] = first_step;
  out["stopped"] = stopped;
  if (!checkpoints.is_null()) out["checkpoints"] = checkpoints;
  out["losses"] = losses;
  out["eval_losses"] = nlohmann::json::array();
  for (const auto& [step, loss] : eval_losses) out["eval_losses"].push_back({step, loss});
  out["final_loss"] = losses.empty() ? nlohmann::json(nullptr) : nlohmann::json(losses.back());
  out["final_eval_loss"] =
      eval_losses.empty() ? nlohmann::json(nullptr) : nlohmann::json(eval_losses.back().second);
  out["tokens_per_second"] = tokens_per_second;
  out["params"] = params;
  out["flops_per_token"] = flops_per_token;
  out["config"] = config_to_json(config);
  for (const auto& [key, value] : engine_fields.items()) out[key] = value;
  if (fp8) {
    out["fp8"] = {{"values", fp8_stats.values},
                  {"saturated", fp8_stats.saturated},
                  {"saturated_fraction",
                   fp8_stats.values ? double(fp8_stats.saturated) / fp8_stats.values : 0.0},
                  {"scale_min", fp8_stats.min_scale},
                  {"scale_max", fp8_stats.max_scale}};
  }
  return out;
}

}  // namespace tandem
