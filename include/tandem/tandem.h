// tandem's public C++ API, for a training codebase that embeds tandem instead of running
// tandem-train: build a configuration, supply data, train on the grid the launcher set up,
// observe every step and evaluation, steer the run from code, read a checkpoint's parameters.
// Everything else under the source tree is internal and may change between versions;
// docs/embedding.md walks through it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tandem/data_source.h"
#include "tandem/errors.h"
#include "tandem/version.h"

namespace tandem {

// "0.1.0": the library's version (tandem/version.h has it at compile time).
const char* version();
// The commit it was built from ("unknown" outside a git checkout).
const char* build_commit();

// A run's configuration: the keys of docs/configuration.md, with the same parsing and the same
// messages as tandem-train's config file and --set; every refusal is a UsageError.
class RunConfig {
 public:
  RunConfig();  // every key at its default
  static RunConfig from_file(const std::string& path);
  // `source_name` names the text in errors ("<string>" unless given).
  static RunConfig from_toml(const std::string& toml_text, const std::string& source_name = "");
  ~RunConfig();
  RunConfig(const RunConfig&);
  RunConfig& operator=(const RunConfig&);
  RunConfig(RunConfig&&) noexcept;
  RunConfig& operator=(RunConfig&&) noexcept;

  // One key, as --set takes it: set("train.steps", "100"), set("data.path", "corpus.txt").
  RunConfig& set(const std::string& key, const std::string& value);
  // "section.key=value", exactly --set's argument.
  RunConfig& set(const std::string& assignment);
  // The value of a key as JSON ("100", "\"corpus.txt\"", "true", "0.0012345678").
  std::string get(const std::string& key) const;
  // Refuses values out of range and impossible combinations (run() checks this too).
  void validate() const;
  // Every key, as TOML that from_toml reads back to the same configuration.
  std::string to_toml() const;

  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// What tandem-train's flags set, for a run in this process.
struct RunOptions {
  // "" (start from step 0), "auto" (the newest usable checkpoint in checkpoint.dir) or the path
  // of a checkpoint or of a directory of checkpoints: tandem-train's --resume.
  std::string resume;
  std::string summary_json_path;   // --summary-json
  std::string log_jsonl_path;      // --log-jsonl ({rank}: every rank's own)
  std::string trace_path;          // --trace (multi-rank runs)
  std::string label = "embedded";  // how the console and the live page name the run
};

// One optimizer step, as every rank saw it (rank 0's loss is the job's mean).
struct StepInfo {
  int64_t step = 0;  // optimizer steps taken after it: 1 for the first
  double loss = 0, learning_rate = 0, grad_norm = 0;
  int64_t tokens = 0;  // of the whole global batch
  double seconds = 0;  // the step with its boundary work
  // This rank's part of the step: compute, and waits on peers.
  double compute_seconds = 0, all_to_all_wait_seconds = 0, pipeline_wait_seconds = 0,
         sync_wait_seconds = 0;
  bool checkpoint = false;  // a checkpoint was started at its end
};

struct EvaluationInfo {
  int64_t step = 0;  // after which it ran
  double loss = 0;   // the mean held-out loss
  double seconds = 0;
};

struct RunSummary {
  int64_t steps = 0;       // optimizer steps taken in all (a resumed run counts the earlier ones)
  int64_t first_step = 0;  // steps already taken when this run started
  // Stopped before train.steps: by stop() or the control service (stopped_by_request), or by
  // stop_when or another rank's callback exception; a checkpoint of `steps` was written first
  // when checkpoint.dir is set.
  bool stopped = false, stopped_by_request = false;
  // Nothing was trained: the resumed checkpoint is already at train.steps.
  bool nothing_to_train = false;
  std::vector<double> losses;                           // the mean training loss of each step
  std::vector<std::pair<int64_t, double>> eval_losses;  // (step, mean held-out loss)
  double tokens_per_second = 0;
  int64_t params = 0;
  double flops_per_token = 0;
  std::string json;  // everything --summary-json writes, config included
};

// The answer to a steering command, once the run applied it at a step boundary.
struct ControlResult {
  bool ok = false;
  std::string message;  // why not, when !ok
  // pause/resume: the boundary is after this step; checkpoint/stop: the checkpoint's step;
  // set_learning_rate: the first step trained with the new rate.
  int64_t step = 0;
  std::string path;                   // checkpoint/stop: the checkpoint's directory
  double previous_learning_rate = 0;  // set_learning_rate: what that step would have used
};

class ControlReply {
 public:
  bool ready() const;
  // Blocks until the run has applied the command (or ended without it: !ok). Refused (an Error)
  // on the training thread while the run is on: a step callback waiting for the boundary it
  // holds up would never return.
  ControlResult wait() const;
  // The same, waiting at most `timeout`: nothing when the command is still to be applied.
  std::optional<ControlResult> wait_for(std::chrono::milliseconds timeout) const;

  struct Impl;
  explicit ControlReply(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<const Impl> impl_;
};

// Training in this process, as one rank of the job its launcher started (mpirun, srun, torchrun,
// tandem-launch: the rank reads who it is from the environment, as tandem-train does) or alone.
// One run at a time per process (another, started while one trains, is refused); an MPI job
// (comm.world = "mpi") runs once per process, as MPI may be initialised once. Once a multi-rank
// job's ranks have joined, an error other than one from a callback (a data source's, a peer lost, a
// collective timed out, a checkpoint that does not load) ends the process after its report, with
// tandem-train's exit code (3 for a communication fault): peers may be blocked in collectives that
// no exception can unwind.
class Run {
 public:
  explicit Run(RunConfig config, RunOptions options = {});
  ~Run();
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  // Tokens from `source` instead of data.path (then data.* is not read). Before run().
  void set_data_source(std::shared_ptr<const DataSource> source);
  // Called on the training thread after every step and every evaluation, on every rank. An
  // exception from a callback stops the run at the next step boundary (after a checkpoint when
  // checkpoint.dir is set), and run() rethrows it. (One from the data source is thrown from the
  // step it was filling, which is not trained: no checkpoint holds a step of half a batch.)
  void on_step(std::function<void(const StepInfo&)> callback);
  void on_evaluation(std::function<void(const EvaluationInfo&)> callback);
  // Asked at every step boundary, and every 100 ms while paused, on every rank: true on any rank
  // stops every rank there, after a checkpoint when checkpoint.dir is set. The library installs
  // no signal handler; a program that wants tandem-train's SIGTERM (what tandem-launch and slurm
  // send before they stop a job) sets a flag in its own handler and returns it here.
  void stop_when(std::function<bool()> check);
  bool started() const;  // run() was called

  // Trains to train.steps, or until stopped. Errors are tandem::Error (UsageError for what the
  // user gave) with tandem-train's messages; a run that trained but could not write its last
  // checkpoint, its summary file or its trace throws an Error saying which, after its report.
  // A callback's exception is rethrown on the rank that raised it; the other ranks return a
  // summary with `stopped` set.
  RunSummary run();

  // Steering, with the control service's semantics: each command is applied by every rank at
  // the same step boundary. Taken by rank 0 (an Error elsewhere); callable from any thread,
  // before or during run(), also from a step callback (which must not wait() for it).
  ControlReply pause();
  ControlReply resume();
  ControlReply checkpoint();  // needs checkpoint.dir
  ControlReply set_learning_rate(double learning_rate);
  ControlReply stop();  // checkpoints first when checkpoint.dir is set

  // This process's place in the job (from the launcher's environment; 0 and 1 alone).
  int rank() const;
  int world_size() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// A checkpoint's full-model parameter, in fp32, row-major.
struct ParameterValues {
  std::vector<int64_t> shape;
  std::vector<float> values;
};
// Every parameter of checkpoint `path` (a step-NNNNNNNN directory) by global name, as
// tandem-checkpoint export names them; the checkpoint is verified first (checksums, shapes).
std::map<std::string, ParameterValues> load_parameters(const std::string& path);

}  // namespace tandem
