// One training job in this process, from a checked configuration to its summary: the launcher's
// heartbeat, the grid, metrics and the live page, the control service, resuming, checkpoints,
// the trainer, and the report of where everything went. tandem-train is this plus its flags and
// signals; the public API (include/tandem/tandem.h) is this plus an embedding program's hooks.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "monitoring/control_board.h"
#include "runtime/core/config.h"
#include "runtime/train/trainer.h"
#include "tandem/data_source.h"

namespace tandem {

// What tandem-train's flags say.
struct JobOutputs {
  std::string config_label;  // the config file, as the console and the live page name it
  std::string summary_path, trace_path, log_jsonl_path;
  std::string resume;  // "", "auto" or a path
};

// What an embedding program adds.
struct JobHooks {
  std::shared_ptr<const DataSource> data_source;  // null: data.path's files
  std::function<void(const StepRecord&)> on_step;
  std::function<void(const EvaluationRecord&)> on_evaluation;
  // Asked at every step boundary on every rank: true on any rank stops every rank there.
  std::function<bool()> stop_requested;
  std::string stop_request_name = "SIGTERM";  // what stop_requested stands for, in the log
  // Commands from code, read by rank 0 (and served by its control service, when control.port is
  // set). Closed when the run ends.
  std::shared_ptr<monitoring::ControlBoard> control_board;
  std::string program = "tandem-train";  // names the process in a fault's last words
};

struct JobResult {
  TrainSummary summary;
  bool nothing_to_train = false;  // the resumed checkpoint is at train.steps already
  bool reports = true;            // this rank prints the job's lines (rank 0)
  int rank = 0, world_size = 1;
  // A finished run whose outputs are not all in place (the last checkpoint, the summary file,
  // the trace), already reported on the console: tandem-train exits 1.
  std::string failure;
};

// The rank and world size the launcher's environment gives this process (0 and 1 alone).
std::pair<int, int> launched_rank_and_size();

// Runs the job, one at a time per process. Errors in what the user gave before any rank talks to
// another are UsageErrors (tandem-train: exit 2); later ones are Errors as thrown. A communication
// fault once the ranks have joined ends the process with its exit code (3) after the report: peers
// may be blocked in collectives that no exception unwinds, and tearing the communicators down would
// wait for them.
JobResult run_job(Config config, const JobOutputs& outputs, const JobHooks& hooks);

}  // namespace tandem
