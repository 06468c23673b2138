// Training loop, progress lines and the run summary.
#include "runtime/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "kernels/elementwise.h"
#include "kernels/optimizer.h"
#include "runtime/core/device_timer.h"
#include "runtime/core/errors.h"
#include "runtime/core/logging.h"
#include "runtime/core/runtime_context.h"
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

SingleProcessEngine::SingleProcessEngine(const Config& config,
                                         std::shared_ptr<const DataSource> data)
    : config_(config),
      device_(training_device(config.train.device)),
      loader_(open_data_source(config, std::move(data)), config.model.seq_len),
      model_(config.model, static_cast<uint64_t>(config.train.seed),
             ChunkSpec::whole_model(config.model), config.fp8, device_),
      optimizer_(whole_parameters(model_.parameters()), config.train) {}

StepReport SingleProcessEngine::train_step(int64_t step) {
  check_step_order(step, optimizer_.steps_taken());
  const auto& t = config_.train;
  const int64_t tokens_per_batch = t.batch_size * config_.model.seq_len;
  Tensor tokens = Tensor::empty({tokens_per_batch}, DType::kI32);
  Tensor targets = Tensor::empty({tokens_per_batch}, DType::kI32);
  loader_.fill(Split::kTrain, step, 0, t.batch_size, tokens, targets);
  DeviceTimer timer(device_);
  tokens = tokens.to(device_);
  targets = targets.to(device_);

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
  std::vector<const Tensor*> grads;
  for (const Parameter* p : params) grads.push_back(&p->grad);
  report.grad_norm = std::sqrt(kernels::sum_of_squares(grads));
  check_grad_norm(report.grad_norm, step);
  report.learning_rate = learning_rate_at(t, step, learning_rate_change());
  optimizer_.step(report.learning_rate, kernels::clip_coefficient(report.grad_norm, t.grad_clip));
  for (Parameter* p : params) p->grad.zero_();
  // Waits for the optimizer's kernels too, so that the step's wall time holds all of its work.
  report.device_seconds = timer.stop_seconds();
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
  out.learning_rate_change = learning_rate_change();
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
    const Tensor device_targets = targets.to(device_);
    MicroBatchState state;
    model_.forward(tokens.to(device_), state, &device_targets, Pass::evaluate());
    total += state.loss_sum;
  }
  // In double: tokens per batch times batches may pass int64 (both are bounded, not their product).
  return total / (static_cast<double>(tokens_per_batch) * static_cast<double>(t.eval_batches));
}

Trainer::Trainer(const Config& config)
    : Trainer(config, std::make_unique<SingleProcessEngine>(config)) {}

Trainer::Trainer(const Config& config, std::unique_ptr<TrainEngine> engine)
    : config_(config), engine_(std::move(engine)) {}

namespace {
double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

monitoring::JobStatus::Grid grid_of(const nlohmann::json& g) {
  monitoring::JobStatus::Grid out;
  out.world_size = g.value("world_size", 1);
  out.pp = g.value("pp", 1);
  out.dp = g.value("dp", 1);
  out.ep = g.value("ep", 1);
  out.zero1 = g.value("zero1", false);
  out.schedule = g.value("schedule", std::string());
  return out;
}

using monitoring::CommandKind;
using monitoring::CommandOutcome;
using Code = monitoring::CommandOutcome::Code;

// How long a paused job waits between agreements: a command takes at most this long to apply,
// and the agreement (one small all-reduce) costs nothing measurable ten times a second.
constexpr auto kPausePoll = std::chrono::milliseconds(100);

// A test's slowdown of one rank: TANDEM_TEST_SLOW_RANK=RANK:MILLISECONDS sleeps that long at
// the start of each of its steps (compute, as the straggler detector sees it). Unset: none.
double test_slowdown_seconds(int rank) {
  const char* hook = std::getenv("TANDEM_TEST_SLOW_RANK");
  if (!hook || !*hook) return 0;
  int slow_rank = -1;
  double milliseconds = 0;
  TANDEM_CONFIG_CHECK(std::sscanf(hook, "%d:%lf", &slow_rank, &milliseconds) == 2 &&
                          slow_rank >= 0 && milliseconds >= 0 && std::isfinite(milliseconds),
                      "TANDEM_TEST_SLOW_RANK='", hook,
                      "' is not RANK:MILLISECONDS (a test's slowdown of one rank); unset it");
  return slow_rank == rank ? milliseconds / 1e3 : 0;
}

CommandOutcome at_step(int64_t step, bool changed = true) {
  CommandOutcome out;
  out.step = step;
  out.changed = changed;
  return out;
}
}  // namespace

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
  const int64_t log_interval =
      t.log_interval > 0 ? t.log_interval : std::max<int64_t>(1, (t.steps + 99) / 100);
  const int64_t first_step = engine_->state().steps_taken;
  summary.first_step = first_step;
  StepBoundary boundary(engine_->job_world(), control_, stop_requested_);
  comm::Communicator* world = engine_->job_world();
  stragglers_ = std::make_unique<StragglerDetector>(world ? world->size() : 1,
                                                    config_.monitoring.straggler_ratio,
                                                    config_.monitoring.straggler_window);
  const double slowdown_seconds = test_slowdown_seconds(world ? world->rank() : 0);
  status_.total_steps = t.steps;
  status_.step = first_step;
  status_.grid = grid_of(engine_->grid_description());
  if (const auto& change = engine_->learning_rate_change())
    status_.learning_rate_changed_at_step = change->from_step + 1;
  if (checkpoints_)
    checkpoints_->set_on_commit([this](int64_t step, bool committed, const std::string& path) {
      if (committed) status_.last_checkpoint_step = step, status_.last_checkpoint_path = path;
      answer_checkpoint_waiters(step, committed, path);
    });
  publish(monitoring::JobStatus::State::kRunning);
  const auto start = std::chrono::steady_clock::now();
  double train_seconds = 0;
  // Step times with and without a checkpoint at their end (the first step of a process, which
  // warms up, is left out): their difference is what a checkpoint costs the step.
  double checkpoint_step_seconds = 0, other_step_seconds = 0;
  int64_t checkpoint_steps = 0, other_steps = 0;
  // What the boundary's agreement costs the step (the one all-reduce, and applying commands),
  // and publishing the status for the control service.
  double agreement_seconds = 0, publish_seconds = 0;
  int64_t agreements = 0, pauses = 0;
  int64_t step = first_step;
  for (; step < t.steps; ++step) {
    const auto step_start = std::chrono::steady_clock::now();
    if (slowdown_seconds > 0)
      std::this_thread::sleep_for(std::chrono::duration<double>(slowdown_seconds));
    const StepReport report = engine_->train_step(step);
    {
      const double all_to_all = report.dispatch_exposed_seconds + report.combine_exposed_seconds;
      const double waits = all_to_all + report.pipeline_wait_seconds + report.sync_wait_seconds;
      my_times_ = {std::max(0.0, seconds_since(step_start) - waits), all_to_all,
                   report.pipeline_wait_seconds, report.sync_wait_seconds};
    }
    const double loss = report.loss;
    summary.fp8_stats.merge(report.fp8);
    // The step boundary: every rank decides the same (stop, pause, checkpoint, learning rate)
    // here, from one agreement.
    const int64_t done = step + 1;
    const bool last = done == t.steps;
    const auto agreement_start = std::chrono::steady_clock::now();
    const BoundaryDecision decision = boundary.agree(my_times_);
    watch_stragglers(decision);
    std::vector<std::shared_ptr<monitoring::Command>> pausers;
    for (auto& command : boundary.commands())
      if (command->kind() == CommandKind::kPause) pausers.push_back(command);
    apply(decision, boundary.commands(), done, last, /*paused=*/false);
    agreement_seconds += seconds_since(agreement_start);
    ++agreements;
    bool stop = decision.stop();
    bool checkpoint = false;
    int64_t saved = -1;
    if (checkpoints_) {
      checkpoints_->poll();
      const int64_t interval = config_.checkpoint.interval;
      checkpoint = last || stop || decision.checkpoint || (interval > 0 && done % interval == 0);
      if (checkpoint) save_checkpoint(done), saved = done;
    }
    const double seconds = seconds_since(step_start);
    train_seconds += seconds;
    if (step > first_step) {
      (checkpoint ? checkpoint_step_seconds : other_step_seconds) += seconds;
      ++(checkpoint ? checkpoint_steps : other_steps);
    }
    summary.losses.push_back(loss);
    const double elapsed = seconds_since(start) - paused_seconds_;
    const double eta =
        elapsed / static_cast<double>(done - first_step) * static_cast<double>(t.steps - done);
    char line[256];
    std::snprintf(line, sizeof line,
                  "step %lld/%lld | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | "
                  "%.1f ms/step | ETA %s",
                  static_cast<long long>(done), static_cast<long long>(t.steps), loss,
                  report.learning_rate, report.grad_norm, tokens_per_step / seconds, seconds * 1e3,
                  format_duration(eta).c_str());
    if (config_.train.device == DeviceType::kCUDA && report.device_seconds > 0) {
      char device_line[48];
      std::snprintf(device_line, sizeof device_line, " | device %.1f ms",
                    report.device_seconds * 1e3);
      std::strncat(line, device_line, sizeof line - std::strlen(line) - 1);
    }
    if (config_.fp8.enabled) {
      char fp8_line[96];
      std::snprintf(fp8_line, sizeof fp8_line, " | fp8 saturated %.2e | scales %.1e..%.1e",
                    report.fp8.values ? double(report.fp8.saturated) / report.fp8.values : 0.0,
                    report.fp8.min_scale, report.fp8.max_scale);
      std::strncat(line, fp8_line, sizeof line - std::strlen(line) - 1);
    }
    if (reports && (done % log_interval == 0 || done == first_step + 1 || last || stop))
      log_info(line);
    const StepRecord record{done,
                            loss,
                            report.learning_rate,
                            report.grad_norm,
                            tokens_per_step,
                            seconds,
                            checkpoint,
                            report,
                            my_times_,
                            stragglers_->verdict(world ? world->rank() : 0)};
    if (step_log_)
      step_log_->step(record.step, record.loss, record.lr, record.grad_norm, record.tokens,
                      record.seconds, restart_);
    for (const auto& observer : step_observers_) observer(record);
    if (checkpoints_)
      for (const auto& observer : checkpoint_observers_) observer(checkpoints_->stats());
    if (last || (t.eval_interval > 0 && done % t.eval_interval == 0)) {
      const auto eval_start = std::chrono::steady_clock::now();
      const double eval_loss = engine_->evaluate();
      const EvaluationRecord evaluation{done, eval_loss, seconds_since(eval_start)};
      for (const auto& observer : evaluation_observers_) observer(evaluation);
      summary.eval_losses.emplace_back(done, eval_loss);
      char eval_line[128];
      std::snprintf(eval_line, sizeof eval_line, "eval step %lld | held-out loss %.4f",
                    static_cast<long long>(done), eval_loss);
      if (reports) log_info(eval_line);
      if (step_log_) step_log_->evaluation(done, eval_loss);
    }
    const auto publish_start = std::chrono::steady_clock::now();
    status_.step = done;
    status_.loss = loss;
    status_.learning_rate = report.learning_rate;
    status_.grad_norm = report.grad_norm;
    status_.tokens_per_second = tokens_per_step / seconds;
    status_.step_seconds = seconds;
    status_.eta_seconds = eta;
    publish(stop ? monitoring::JobStatus::State::kStopping
                 : monitoring::JobStatus::State::kRunning);
    publish_seconds += seconds_since(publish_start);
    // The pause comes after the step's record and evaluation, so that what a paused job shows
    // is all it did.
    if (decision.pause && !stop && !last) {
      ++pauses;
      stop = pause(boundary, std::move(pausers), done, saved);
    }
    if (stop && !last) {
      summary.stopped = true;
      ++step;
      break;
    }
  }
  summary.steps = step;
  summary.fp8 = config_.fp8.enabled;
  // SIGTERM wins over the control service's Stop: a preempted job must say "resume me" (exit 4).
  summary.stopped_by_control = summary.stopped && stopped_by_control_ && !stopped_by_signal_;
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
  const double per_agreement = agreements ? agreement_seconds / static_cast<double>(agreements) : 0;
  const double mean_step =
      step > first_step ? train_seconds / static_cast<double>(step - first_step) : 0;
  summary.step_boundary = {
      {"agreements", agreements},
      {"agreement_doubles", boundary.doubles()},
      {"agreement_seconds", per_agreement},
      {"agreement_fraction_of_step", mean_step > 0 ? per_agreement / mean_step : 0},
      {"status_publish_seconds",
       agreements ? publish_seconds / static_cast<double>(agreements) : 0},
      {"control", control_ != nullptr},
      {"pauses", pauses},
      {"paused_seconds", paused_seconds_}};
  answer_at_end(summary);
  return summary;
}

void Trainer::apply(const BoundaryDecision& d,
                    std::vector<std::shared_ptr<monitoring::Command>>& commands, int64_t done,
                    bool last, bool paused) {
  stopped_by_control_ = stopped_by_control_ || d.stop_control;
  stopped_by_signal_ = stopped_by_signal_ || d.stop_signal;
  const auto& t = config_.train;
  CommandOutcome learning_rate_outcome;
  if (d.learning_rate) {
    if (last) {
      learning_rate_outcome = CommandOutcome::failure(
          Code::kFailedPrecondition,
          detail::concat("the run has trained its last step (train.steps = ", t.steps,
                         "): no step is left to train at a new rate"));
    } else {
      // Every rank sets the same change here: the next step trains at exactly this rate.
      const double previous = learning_rate_at(t, done, engine_->learning_rate_change());
      engine_->set_learning_rate_change(LearningRateChange{done, *d.learning_rate});
      status_.learning_rate_changed_at_step = done + 1;
      learning_rate_outcome = at_step(done + 1);
      learning_rate_outcome.previous_learning_rate = previous;
      if (engine_->reports())
        log_info("control: learning rate ", *d.learning_rate, " from step ", done + 1,
                 " on (the schedule had ", previous,
                 "); later steps follow the schedule's shape scaled by the same factor");
    }
  }
  for (auto& command : commands) {
    switch (command->kind()) {
      case CommandKind::kSetLearningRate:
        command->answer(learning_rate_outcome);
        break;
      case CommandKind::kPause:
        // Not paused yet: answered by pause() once every rank waits, after this step's record.
        if (paused)
          command->answer(at_step(done, /*changed=*/false));
        else if (last || d.stop())
          command->answer(CommandOutcome::failure(
              Code::kFailedPrecondition, last
                                             ? "the run has trained its last step: nothing to pause"
                                             : "the run stops at this step boundary"));
        break;
      case CommandKind::kResume:
        if (d.stop())  // a Stop at the same boundary wins: the job ends, it does not go on
          command->answer(CommandOutcome::failure(
              Code::kFailedPrecondition, "the run stops at this step boundary: nothing resumes"));
        else
          command->answer(at_step(done, /*changed=*/paused));
        break;
      case CommandKind::kCheckpoint:
        if (checkpoints_)
          checkpoint_waiters_.emplace_back(done, command);
        else
          command->answer(CommandOutcome::failure(
              Code::kFailedPrecondition,
              "this run writes no checkpoints (checkpoint.dir is not set)"));
        break;
      case CommandKind::kStop:
        stop_waiters_.push_back(command);
        break;
    }
  }
}

bool Trainer::pause(StepBoundary& boundary,
                    std::vector<std::shared_ptr<monitoring::Command>> pausers, int64_t done,
                    int64_t& saved) {
  const auto pause_start = std::chrono::steady_clock::now();
  const bool reports = engine_->reports();
  for (auto& command : pausers) command->answer(at_step(done));
  if (reports)
    log_info("control: paused after step ", done,
             "; every rank waits at this step boundary until Resume or Stop");
  publish(monitoring::JobStatus::State::kPaused);
  bool stop = false;
  for (;;) {
    std::this_thread::sleep_for(kPausePoll);
    const int64_t committed_before = status_.last_checkpoint_step;
    const BoundaryDecision d = boundary.agree(my_times_);
    const bool asked = !boundary.commands().empty();
    apply(d, boundary.commands(), done, /*last=*/false, /*paused=*/true);
    if (checkpoints_) {
      checkpoints_->poll();
      if (d.checkpoint || d.stop()) {
        if (status_.last_checkpoint_step == done)  // this boundary's is already complete
          answer_checkpoint_waiters(done, true, status_.last_checkpoint_path);
        else if (saved != done || !checkpoints_->in_progress())  // none yet, or it failed
          save_checkpoint(done), saved = done;
      }
    }
    if (d.stop()) {
      stop = true;
      break;
    }
    if (d.resume) break;
    // Watchers hear of what changed while paused (one message, not one per poll).
    if (asked || status_.last_checkpoint_step != committed_before)
      publish(monitoring::JobStatus::State::kPaused);
  }
  const double paused = seconds_since(pause_start);
  paused_seconds_ += paused;
  if (reports)
    log_info("control: ", stop ? "stopping" : "resumed", " after step ", done, " (paused ",
             format_duration(paused), ")");
  publish(stop ? monitoring::JobStatus::State::kStopping : monitoring::JobStatus::State::kRunning);
  return stop;
}

void Trainer::watch_stragglers(const BoundaryDecision& decision) {
  const auto& hosts = runtime().hosts;
  const auto rank_name = [&](int r) {
    return detail::concat("rank ", r,
                          static_cast<size_t>(r) < hosts.size() ? " on " + hosts[r] : "");
  };
  const auto fixed = [](double value, double scale) {
    char text[32];
    std::snprintf(text, sizeof text, "%.*f", scale > 1 ? 1 : 2, value * scale);
    return std::string(text);
  };
  const auto ms = [&](double seconds) { return fixed(seconds, 1e3); };
  for (const StragglerChange& c : stragglers_->observe(decision.rank_times)) {
    if (!engine_->reports()) continue;
    if (c.named)
      log_warn("straggler: ", rank_name(c.rank), " computes ", fixed(c.verdict.ratio, 1),
               "x as long as the other ranks' median over the last ",
               config_.monitoring.straggler_window,
               " steps (monitoring.straggler_ratio = ", config_.monitoring.straggler_ratio,
               "); its mean step: compute ", ms(c.mean.compute), " ms, all-to-all wait ",
               ms(c.mean.all_to_all_wait), " ms, pipeline wait ", ms(c.mean.pipeline_wait),
               " ms, sync wait ", ms(c.mean.sync_wait), " ms");
    else
      log_info("straggler: ", rank_name(c.rank), " is no longer one (", fixed(c.verdict.ratio, 1),
               "x the others' median compute, below ", fixed(stragglers_->clear_ratio(), 1), ")");
  }
  status_.ranks.resize(decision.rank_times.size());
  for (size_t r = 0; r < decision.rank_times.size(); ++r) {
    const RankStepTimes& t = decision.rank_times[r];
    const StragglerVerdict& v = stragglers_->verdict(static_cast<int>(r));
    status_.ranks[r] = {t.compute,
                        t.all_to_all_wait,
                        t.pipeline_wait,
                        t.sync_wait,
                        v.score,
                        v.straggler,
                        r < hosts.size() ? hosts[r] : std::string()};
  }
  status_.ranks_heard_at = std::chrono::steady_clock::now();
}

void Trainer::save_checkpoint(int64_t done) {
  checkpoints_->save(engine_->state(), done);
}

void Trainer::answer_checkpoint_waiters(int64_t step, bool committed, const std::string& path) {
  std::erase_if(checkpoint_waiters_, [&](auto& waiter) {
    if (waiter.first != step) return false;
    if (committed) {
      CommandOutcome out = at_step(step);
      out.path = path;
      waiter.second->answer(std::move(out));
    } else {
      waiter.second->answer(CommandOutcome::failure(
          Code::kAborted,
          detail::concat("checkpoint ", path, " could not be written (the job's log says why)")));
    }
    return true;
  });
}

void Trainer::publish(monitoring::JobStatus::State state) {
  if (!control_ && status_observers_.empty()) return;
  status_.state = state;
  status_.checkpoint_in_progress = checkpoints_ && checkpoints_->in_progress();
  for (const auto& observer : status_observers_) observer(status_);
  if (control_) control_->publish(status_);
}

void Trainer::answer_at_end(const TrainSummary& summary) {
  for (auto& [step, command] : checkpoint_waiters_)
    command->answer(CommandOutcome::failure(
        Code::kAborted, detail::concat("the run ended before checkpoint ", step, " was complete")));
  checkpoint_waiters_.clear();
  // Stop is answered once the final checkpoint is known to be complete (or not).
  const bool saved = !checkpoints_ || status_.last_checkpoint_step == summary.steps;
  for (auto& command : stop_waiters_) {
    if (saved) {
      CommandOutcome out = at_step(summary.steps);
      out.path = checkpoints_ ? status_.last_checkpoint_path : "";
      command->answer(std::move(out));
    } else {
      command->answer(CommandOutcome::failure(
          Code::kAborted,
          detail::concat("stopped after step ", summary.steps,
                         " but its checkpoint could not be written; the newest complete one is ",
                         status_.last_checkpoint_step > 0 ? status_.last_checkpoint_path
                                                          : std::string("none of this run's"))));
    }
  }
  stop_waiters_.clear();
  publish(monitoring::JobStatus::State::kFinished);
}

nlohmann::json TrainSummary::to_json(const Config& config) const {
  nlohmann::json out;
  out["steps"] = steps;
  out["first_step"] = first_step;
  out["stopped"] = stopped;
  if (!checkpoints.is_null()) out["checkpoints"] = checkpoints;
  if (!step_boundary.is_null()) out["step_boundary"] = step_boundary;
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
