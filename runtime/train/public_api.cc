// The public C++ API (include/tandem/tandem.h) over the job runner (job.h): its types are the
// stable surface, converted here from and to the internal ones.
#include <atomic>
#include <cstring>
#include <exception>
#include <mutex>
#include <sstream>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>
#include "monitoring/build_info.h"
#include "monitoring/control_board.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/job.h"
#include "runtime/train/safetensors.h"
#include "tandem/tandem.h"

namespace tandem {

const char* version() {
  return monitoring::build_version().data();  // a string literal: terminated
}

const char* build_commit() {
  return monitoring::build_commit().data();
}

// ---- RunConfig

struct RunConfig::Impl {
  Config config;
};

RunConfig::RunConfig() : impl_(std::make_unique<Impl>()) {}
RunConfig::~RunConfig() = default;
RunConfig::RunConfig(const RunConfig& other) : impl_(std::make_unique<Impl>(*other.impl_)) {}
RunConfig& RunConfig::operator=(const RunConfig& other) {
  if (this != &other) impl_ = std::make_unique<Impl>(*other.impl_);
  return *this;
}
RunConfig::RunConfig(RunConfig&&) noexcept = default;
RunConfig& RunConfig::operator=(RunConfig&&) noexcept = default;

namespace {

// What the user gave is wrong: a UsageError, as tandem-train's exit code 2 says.
template <class F>
decltype(auto) as_usage_error(F&& f) {
  try {
    return f();
  } catch (const UsageError&) {
    throw;
  } catch (const Error& error) {
    throw UsageError(error.what());
  }
}

}  // namespace

RunConfig RunConfig::from_file(const std::string& path) {
  RunConfig result;
  result.impl_->config = as_usage_error([&] { return load_config_file(path); });
  return result;
}

RunConfig RunConfig::from_toml(const std::string& toml_text, const std::string& source_name) {
  RunConfig result;
  result.impl_->config = as_usage_error([&] {
    return parse_config_string(toml_text, source_name.empty() ? "<string>" : source_name);
  });
  return result;
}

RunConfig& RunConfig::set(const std::string& key, const std::string& value) {
  TANDEM_CONFIG_CHECK(key.find('=') == std::string::npos, "config key '", key,
                      "' holds '=': give the key and its value apart");
  as_usage_error([&] { apply_override(impl_->config, key + "=" + value); });
  return *this;
}

RunConfig& RunConfig::set(const std::string& assignment) {
  as_usage_error([&] { apply_override(impl_->config, assignment); });
  return *this;
}

std::string RunConfig::get(const std::string& key) const {
  const size_t dot = key.find('.');
  const nlohmann::json all = config_to_json(impl_->config);
  if (dot != std::string::npos && key.find('=') == std::string::npos) {
    const std::string section = key.substr(0, dot), name = key.substr(dot + 1);
    if (all.contains(section) && all[section].is_object() && all[section].contains(name))
      return all[section][name].dump();
  }
  // The message --set gives, with the nearest key.
  Config scratch = impl_->config;
  as_usage_error([&] { apply_override(scratch, key + "="); });
  throw UsageError(detail::concat("config key '", key, "': no such key (docs/configuration.md)"));
}

void RunConfig::validate() const {
  as_usage_error([&] { validate_config(impl_->config); });
}

std::string RunConfig::to_toml() const {
  // From the JSON form: doubles to the last bit, strings escaped (a JSON string or number is a
  // TOML one).
  const nlohmann::json all = config_to_json(impl_->config);
  std::string text;
  for (const auto& [section, keys] : all.items()) {
    text += "[" + section + "]\n";
    for (const auto& [name, value] : keys.items()) text += name + " = " + value.dump() + "\n";
  }
  return text;
}

// ---- ControlReply

// What a reply shares with its run: whether the run is on, and on which thread it trains.
struct RunThread {
  std::atomic<bool> training{false};
  std::atomic<std::thread::id> id{};
};

struct ControlReply::Impl {
  std::shared_future<monitoring::CommandOutcome> outcome;
  std::shared_ptr<const RunThread> run;
};

bool ControlReply::ready() const {
  return impl_->outcome.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

std::optional<ControlResult> ControlReply::wait_for(std::chrono::milliseconds timeout) const {
  if (!ready() && impl_->run->training.load() &&
      std::this_thread::get_id() == impl_->run->id.load())
    TANDEM_USER_FAIL(
        "ControlReply::wait() on the training thread (in a step or evaluation callback): the "
        "command is applied at the step boundary that this callback holds up; keep the reply "
        "and wait for it elsewhere, or after run()");
  if (impl_->outcome.wait_for(timeout) != std::future_status::ready) return std::nullopt;
  const monitoring::CommandOutcome& o = impl_->outcome.get();
  ControlResult r;
  r.ok = o.code == monitoring::CommandOutcome::Code::kOk;
  r.message = o.message;
  r.step = o.step;
  r.path = o.path;
  r.previous_learning_rate = o.previous_learning_rate;
  return r;
}

ControlResult ControlReply::wait() const {
  std::optional<ControlResult> result;
  while (!(result = wait_for(std::chrono::hours(1)))) {
  }
  return *result;
}

// ---- Run

struct Run::Impl {
  Config config;
  RunOptions options;
  std::shared_ptr<const DataSource> data;
  std::function<void(const StepInfo&)> on_step;
  std::function<void(const EvaluationInfo&)> on_evaluation;
  std::function<bool()> stop_check;
  std::shared_ptr<monitoring::ControlBoard> board = std::make_shared<monitoring::ControlBoard>();
  std::shared_ptr<RunThread> thread = std::make_shared<RunThread>();
  int rank = 0, world_size = 1;
  std::atomic<bool> started{false};
  // A callback's exception: the run stops at that boundary and run() rethrows the first one.
  std::mutex mutex;
  std::exception_ptr callback_error;
  std::atomic<bool> stop_for_error{false};

  template <class F>
  void call_guarded(F&& f) {
    if (stop_for_error.load()) return;  // the run is stopping for an earlier one
    try {
      f();
    } catch (...) {
      std::lock_guard lock(mutex);
      if (!callback_error) callback_error = std::current_exception();
      stop_for_error = true;
    }
  }

  ControlReply submit(monitoring::CommandKind kind, double learning_rate = 0) const {
    TANDEM_USER_CHECK(rank == 0,
                      "steering commands are taken by rank 0 of the job, which applies "
                      "them on every rank at the same step boundary; this process is "
                      "rank ",
                      rank, ": send them from rank 0");
    return ControlReply(std::make_shared<ControlReply::Impl>(
        ControlReply::Impl{board->submit(kind, learning_rate), thread}));
  }
};

Run::Run(RunConfig config, RunOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->config = config.impl().config;
  impl_->options = std::move(options);
  std::tie(impl_->rank, impl_->world_size) = launched_rank_and_size();
}

Run::~Run() {
  impl_->board->close("the run was destroyed");
}

void Run::set_data_source(std::shared_ptr<const DataSource> source) {
  TANDEM_USER_CHECK(!impl_->started, "set_data_source after run() started");
  impl_->data = std::move(source);
}

void Run::on_step(std::function<void(const StepInfo&)> callback) {
  TANDEM_USER_CHECK(!impl_->started, "on_step after run() started");
  impl_->on_step = std::move(callback);
}

void Run::on_evaluation(std::function<void(const EvaluationInfo&)> callback) {
  TANDEM_USER_CHECK(!impl_->started, "on_evaluation after run() started");
  impl_->on_evaluation = std::move(callback);
}

void Run::stop_when(std::function<bool()> check) {
  TANDEM_USER_CHECK(!impl_->started, "stop_when after run() started");
  impl_->stop_check = std::move(check);
}

bool Run::started() const {
  return impl_->started;
}

RunSummary Run::run() {
  Impl& impl = *impl_;
  TANDEM_USER_CHECK(!impl.started.exchange(true),
                    "Run::run() runs once; make another Run for another run");
  JobHooks hooks;
  hooks.program = "tandem";
  hooks.data_source = impl.data;
  hooks.control_board = impl.board;
  hooks.stop_requested = [&impl] {
    if (impl.stop_for_error.load()) return true;
    bool stop = false;
    if (impl.stop_check) impl.call_guarded([&] { stop = impl.stop_check(); });
    return stop || impl.stop_for_error.load();
  };
  hooks.stop_request_name = "the program's stop_when, or an exception in a callback";
  if (impl.on_step)
    hooks.on_step = [&impl](const StepRecord& r) {
      StepInfo info;
      info.step = r.step;
      info.loss = r.loss;
      info.learning_rate = r.lr;
      info.grad_norm = r.grad_norm;
      info.tokens = r.tokens;
      info.seconds = r.seconds;
      info.compute_seconds = r.times.compute;
      info.all_to_all_wait_seconds = r.times.all_to_all_wait;
      info.pipeline_wait_seconds = r.times.pipeline_wait;
      info.sync_wait_seconds = r.times.sync_wait;
      info.checkpoint = r.checkpoint;
      impl.call_guarded([&] { impl.on_step(info); });
    };
  if (impl.on_evaluation)
    hooks.on_evaluation = [&impl](const EvaluationRecord& r) {
      const EvaluationInfo info{r.step, r.loss, r.seconds};
      impl.call_guarded([&] { impl.on_evaluation(info); });
    };
  impl.thread->id = std::this_thread::get_id();
  impl.thread->training = true;
  struct Done {
    RunThread& thread;
    ~Done() { thread.training = false; }
  } done{*impl.thread};
  const RunOptions& o = impl.options;
  JobResult result = run_job(
      impl.config, {o.label, o.summary_json_path, o.trace_path, o.log_jsonl_path, o.resume}, hooks);
  if (impl.callback_error) std::rethrow_exception(impl.callback_error);
  if (!result.failure.empty()) throw Error(result.failure);
  RunSummary s;
  s.steps = result.summary.steps;
  s.first_step = result.summary.first_step;
  s.stopped = result.summary.stopped;
  s.stopped_by_request = result.summary.stopped_by_control;
  s.nothing_to_train = result.nothing_to_train;
  s.losses = result.summary.losses;
  s.eval_losses = result.summary.eval_losses;
  s.tokens_per_second = result.summary.tokens_per_second;
  s.params = result.summary.params;
  s.flops_per_token = result.summary.flops_per_token;
  if (!result.nothing_to_train) s.json = result.summary.to_json(impl.config).dump(2) + "\n";
  return s;
}

ControlReply Run::pause() {
  return impl_->submit(monitoring::CommandKind::kPause);
}

ControlReply Run::resume() {
  return impl_->submit(monitoring::CommandKind::kResume);
}

ControlReply Run::checkpoint() {
  TANDEM_USER_CHECK(!impl_->config.checkpoint.dir.empty(), monitoring::kCheckpointsOffRefusal);
  return impl_->submit(monitoring::CommandKind::kCheckpoint);
}

ControlReply Run::set_learning_rate(double learning_rate) {
  const std::string refused = monitoring::learning_rate_refusal(learning_rate);
  TANDEM_USER_CHECK(refused.empty(), "set_learning_rate: ", refused);
  return impl_->submit(monitoring::CommandKind::kSetLearningRate, learning_rate);
}

ControlReply Run::stop() {
  return impl_->submit(monitoring::CommandKind::kStop);
}

int Run::rank() const {
  return impl_->rank;
}

int Run::world_size() const {
  return impl_->world_size;
}

// ---- checkpoints

std::map<std::string, ParameterValues> load_parameters(const std::string& path) {
  int64_t elements = 0;
  safetensors::FileImage image = export_parameters(path, DType::kF32, &elements);
  std::map<std::string, ParameterValues> out;
  for (size_t i = 0; i < image.entries().size(); ++i) {
    const safetensors::TensorEntry& e = image.entries()[i];
    ParameterValues p;
    p.shape.assign(e.shape.begin(), e.shape.end());
    p.values.resize((e.end - e.begin) / sizeof(float));
    std::memcpy(p.values.data(), image.data(i), e.end - e.begin);
    out.emplace(e.name, std::move(p));
  }
  return out;
}

}  // namespace tandem
