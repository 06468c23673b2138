// tandem-train: trains the model described by a TOML config, in one process or on every rank of a
// job started by mpirun, srun or the torchrun convention (then on the parallel.* grid).
//   tandem-train CONFIG.toml [--set section.key=value]... [--summary-json PATH] [--trace PATH]
//                [--log-jsonl PATH] [--resume auto|PATH]
//   tandem-train --config-reference     (prints every configuration key as Markdown)
//   tandem-train --metrics-reference    (prints every metric as Markdown)
//   tandem-train --version
// SIGTERM (from an operator, slurm, or tandem-launch forwarding one) stops every rank at the next
// step boundary, after a checkpoint when checkpoint.dir is set, with exit code 4; a second SIGTERM
// ends the process at once. With control.port set, rank 0 serves the gRPC control service
// (tandemctl): its Stop ends the run the same way with exit code 0.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "comm/faults.h"
#include "monitoring/build_info.h"
#include "monitoring/metric_catalog.h"
#include "runtime/core/config.h"
#include "runtime/train/job.h"

namespace {

constexpr const char* kUsage =
    "usage: tandem-train CONFIG.toml [--set section.key=value]... [--summary-json PATH]\n"
    "                    [--trace PATH]   (Chrome trace of the last step; multi-rank runs)\n"
    "                    [--log-jsonl PATH]   (one JSON line per step and evaluation, appended;\n"
    "                    rank 0's, or every rank's when PATH holds {rank})\n"
    "                    [--resume auto|PATH]   (auto: the newest usable checkpoint in\n"
    "                    checkpoint.dir, the default under tandem-launch; PATH: that checkpoint\n"
    "                    or directory of checkpoints)\n"
    "       tandem-train --config-reference\n"
    "       tandem-train --metrics-reference\n"
    "       tandem-train --version\n";

struct Arguments {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string summary_path;
  std::string trace_path;
  std::string log_jsonl_path;
  std::string resume;  // "", "auto" or a path
};

// SIGTERM asks for a stop at the next step boundary; a second one ends the process at once —
// unless it comes within 2 s of the first: slurm delivers its own SIGTERM to every task and a
// batch script forwarding the same warning lands right beside it, one request twice.
volatile std::sig_atomic_t stop_signals = 0;
std::atomic<int64_t> first_stop_ns{0};  // lock-free, so a signal handler may use it

int64_t monotonic_ns() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);  // async-signal-safe
  return int64_t{now.tv_sec} * 1000000000 + now.tv_nsec;
}

void on_stop_signal(int) {
  if (stop_signals > 0) {
    if (monotonic_ns() - first_stop_ns.load() < 2000000000) return;
    std::signal(SIGTERM, SIG_DFL);
    std::raise(SIGTERM);
    return;
  }
  first_stop_ns.store(monotonic_ns());
  stop_signals = 1;
  constexpr char kNote[] =
      "tandem-train: SIGTERM: stopping at the next step boundary (after a checkpoint when "
      "checkpoint.dir is set); another SIGTERM 2 s or more later stops at once\n";
  [[maybe_unused]] const ssize_t n = ::write(2, kNote, sizeof kNote - 1);
}

Arguments parse_arguments(int argc, char** argv) {
  Arguments args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* flag) -> std::string {
      const size_t n = std::strlen(flag);
      std::string given;
      if (arg.size() > n && arg.compare(0, n, flag) == 0 && arg[n] == '=') {
        given = arg.substr(n + 1);
      } else {
        TANDEM_USER_CHECK(i + 1 < argc, flag, " needs a value\n", kUsage);
        given = argv[++i];
      }
      // "--summary-json --trace" would otherwise write the summary to a file named --trace.
      TANDEM_USER_CHECK(!given.empty() && !given.starts_with("--"), flag, " needs a value, got '",
                        given, "'\n", kUsage);
      return given;
    };
    if (arg == "--set" || arg.starts_with("--set=")) {
      args.overrides.push_back(value("--set"));
    } else if (arg == "--summary-json" || arg.starts_with("--summary-json=")) {
      args.summary_path = value("--summary-json");
    } else if (arg == "--trace" || arg.starts_with("--trace=")) {
      args.trace_path = value("--trace");
    } else if (arg == "--log-jsonl" || arg.starts_with("--log-jsonl=")) {
      args.log_jsonl_path = value("--log-jsonl");
    } else if (arg == "--resume" || arg.starts_with("--resume=")) {
      args.resume = value("--resume");
    } else if (arg.starts_with("-")) {
      TANDEM_USER_CHECK(false, "unknown option '", arg, "'\n", kUsage);
    } else {
      TANDEM_USER_CHECK(args.config_path.empty(), "more than one config file given ('",
                        args.config_path, "' and '", arg, "')\n", kUsage);
      args.config_path = arg;
    }
  }
  TANDEM_USER_CHECK(!args.config_path.empty(), "no config file given\n", kUsage);
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tandem;
  if (argc == 2 && std::strcmp(argv[1], "--config-reference") == 0) {
    std::fputs(config_reference_markdown().c_str(), stdout);
    return 0;
  }
  if (argc == 2 && std::strcmp(argv[1], "--metrics-reference") == 0) {
    std::fputs(monitoring::metrics_reference_markdown().c_str(), stdout);
    return 0;
  }
  if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
    const std::string line = detail::concat("tandem-train ", monitoring::build_version(),
                                            " (commit ", monitoring::build_commit(), ")\n");
    std::fputs(line.c_str(), stdout);
    return 0;
  }
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  // A stop request arriving while the job starts up is honoured at the first step boundary.
  std::signal(SIGTERM, on_stop_signal);
  // Past a file-size limit (ulimit -f) a write fails with EFBIG, which the output writer reports
  // and survives, instead of the signal killing a finished run before it printed its result.
  std::signal(SIGXFSZ, SIG_IGN);
  Config config;
  Arguments args;
  try {
    args = parse_arguments(argc, argv);
    config = load_config_file(args.config_path);
    for (const auto& assignment : args.overrides) apply_override(config, assignment);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "tandem-train: error: %s\n", error.what());
    return comm::kUsageExitCode;
  }
  JobHooks hooks;
  hooks.stop_requested = [] { return stop_signals > 0; };
  try {
    const JobResult result = run_job(
        config,
        {args.config_path, args.summary_path, args.trace_path, args.log_jsonl_path, args.resume},
        hooks);
    if (!result.failure.empty()) return comm::kOtherErrorExitCode;  // reported already
    // Asked to stop by an operator, the job is done: exit 0, which no launcher restarts.
    if (result.summary.stopped && !result.summary.stopped_by_control) return comm::kStoppedExitCode;
  } catch (const std::exception& error) {
    // A communication fault (peer lost, collective timeout, store lost) is worth a restart; a
    // configuration refused once the job is up is not. (Once the ranks have joined, run_job
    // reports and ends the process itself.)
    const bool fault = dynamic_cast<const comm::CommFault*>(&error) != nullptr;
    const bool usage = dynamic_cast<const UsageError*>(&error) != nullptr;
    std::fprintf(stderr, "tandem-train: %s: %s\n", fault ? "communication fault" : "error",
                 error.what());
    return fault   ? comm::kCommFaultExitCode
           : usage ? comm::kUsageExitCode
                   : comm::kOtherErrorExitCode;
  }
  return comm::kSuccessExitCode;
}
