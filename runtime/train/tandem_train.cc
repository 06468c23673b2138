// tandem-train: trains the model described by a TOML config, in one process or on every rank of a
// job started by mpirun, srun or the torchrun convention (then on the parallel.* grid).
//   tandem-train CONFIG.toml [--set section.key=value]... [--summary-json PATH] [--trace PATH]
//   tandem-train --config-reference     (prints every configuration key as Markdown)
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comm/bootstrap.h"
#include "comm/faults.h"
#include "comm/launcher_heartbeat.h"
#include "comm/watchdog.h"
#include "comm/world.h"
#include "runtime/core/config.h"
#include "runtime/core/logging.h"
#include "runtime/core/output_file.h"
#include "runtime/core/runtime_context.h"
#include "runtime/model/model_stats.h"
#include "runtime/train/data.h"
#include "runtime/train/parallel_engine.h"
#include "runtime/train/trainer.h"

namespace {

constexpr const char* kUsage =
    "usage: tandem-train CONFIG.toml [--set section.key=value]... [--summary-json PATH]\n"
    "                    [--trace PATH]   (Chrome trace of the last step; multi-rank runs)\n"
    "                    [--log-jsonl PATH]   (one JSON line per step and evaluation, appended)\n"
    "       tandem-train --config-reference\n";

struct Arguments {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string summary_path;
  std::string trace_path;
  std::string log_jsonl_path;
};

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
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  // Past a file-size limit (ulimit -f) a write fails with EFBIG, which the output writer reports
  // and survives, instead of the signal killing a finished run before it printed its result.
  std::signal(SIGXFSZ, SIG_IGN);
  Config config;
  Arguments args;
  comm::LaunchInfo launch;
  // Beats for tandem-launch until main returns, after the world below is torn down.
  std::unique_ptr<comm::LauncherHeartbeat> heartbeat;
  // Outlives the training block below: on an error the communicators must not be torn down
  // (MPI_Finalize would wait for peers that may be stuck), the process exits instead.
  comm::World world;
  try {
    heartbeat = comm::LauncherHeartbeat::start_if_launched(comm::detect_launch());
    args = parse_arguments(argc, argv);
    config = load_config_file(args.config_path);
    for (const auto& assignment : args.overrides) apply_override(config, assignment);
    validate_config(config);
    // The grid is checked before any rank talks to another (in one process too: parallel.ep = 4
    // there is refused, not ignored).
    launch = comm::detect_launch();
    comm::check_timeout_order(comm_timeout_ms(config.comm), rendezvous_timeout_ms(config.comm),
                              launch);
    parallel::make_grid_shape(launch.world_size, config);
    model_stats(config.model);  // refuses a model whose parameters one process cannot address
    // The data files exist, are regular files, are not one another and hold enough tokens.
    static_cast<void>(Dataset::open(config.data, config.model));
    // Output paths are checked before training, so a bad path cannot throw a finished run away;
    // only rank 0 writes them.
    for (const auto& [path, what] :
         {std::pair{args.summary_path, "--summary-json"}, std::pair{args.trace_path, "--trace"},
          std::pair{args.log_jsonl_path, "--log-jsonl"}})
      if (!path.empty() && launch.rank == 0) check_output_path(what, path);
    // A configured flight record directory is checked too: a record is written when the job
    // hangs, the worst moment to find that it cannot be.
    if (!config.comm.flight_record_dir.empty() && (launch.world_size > 1 || config.parallel.pp > 1))
      check_output_path("comm.flight_record_dir",
                        comm::flight_record_path(config.comm.flight_record_dir, launch.rank));
    TANDEM_USER_CHECK(args.trace_path.empty() || launch.world_size > 1 || config.parallel.pp > 1,
                      "--trace records the pipeline executor; it needs a multi-rank run "
                      "(mpirun -np N tandem-train ...)");
  } catch (const std::exception& error) {
    std::fprintf(stderr, "tandem-train: error: %s\n", error.what());
    return comm::kUsageExitCode;
  }
  try {
    set_thread_count(config.train.threads > 0
                         ? static_cast<int>(config.train.threads)
                         : default_thread_count(comm::detect_launch().local_size));
    // A launcher's environment (or a grid asking for more than this process) means a multi-rank
    // job; otherwise the whole model runs here.
    const bool parallel = launch.world_size > 1 || config.parallel.pp > 1;
    std::unique_ptr<TrainEngine> engine;
    if (parallel) {
      world = comm::join_world({config.comm.world, comm_timeout_ms(config.comm),
                                config.comm.flight_record_dir, config.comm.node_collectives,
                                rendezvous_timeout_ms(config.comm)});
      runtime().rank = world.comm->rank();
      runtime().world_size = world.comm->size();
    }
    const bool reports = !parallel || world.comm->rank() == 0;
    if (reports) {
      log_info("tandem-train: ", args.config_path, ", ", runtime().threads, " threads",
               parallel ? detail::concat(" per rank, ", world.comm->size(), " ranks") : "");
      log_info("effective config:\n", config_to_string(config));
    }
    if (parallel) {
      ParallelEngineOptions options;
      options.trace_path = args.trace_path;
      engine = std::make_unique<ParallelEngine>(config, world, options);
    } else {
      engine = std::make_unique<SingleProcessEngine>(config);
    }
    Trainer trainer(config, std::move(engine));
    if (reports && !args.log_jsonl_path.empty())
      trainer.set_step_log(std::make_unique<StepLog>(args.log_jsonl_path), launch.restart_count);
    TrainSummary summary = trainer.run();
    if (!reports) return 0;
    char line[256];
    std::snprintf(line, sizeof line,
                  "summary: %lld steps | final loss %.4f | final held-out loss %.4f | %.0f tok/s | "
                  "%lld parameters | %.2f MFLOP/token",
                  static_cast<long long>(summary.steps), summary.losses.back(),
                  summary.eval_losses.back().second, summary.tokens_per_second,
                  static_cast<long long>(summary.params), summary.flops_per_token / 1e6);
    log_info(line);
    // The trace's own failure was reported where it happened, with the trace itself.
    const bool outputs_lost = summary.engine_fields.contains("trace_error");
    if (!args.summary_path.empty()) {
      const std::string text = summary.to_json(config).dump(2) + "\n";
      try {
        write_output_file("--summary-json", args.summary_path, text);
        log_info("summary written to ", args.summary_path);
      } catch (const Error& error) {
        // The run is finished and its result must not be lost with the file.
        std::fprintf(stderr, "tandem-train: error: %s; the summary follows on stderr\n%s",
                     error.what(), text.c_str());
        return comm::kOtherErrorExitCode;
      }
    }
    if (outputs_lost) return comm::kOtherErrorExitCode;
  } catch (const std::exception& error) {
    // A communication fault (peer lost, collective timeout, store lost) is worth a restart; a
    // configuration refused only once the job is up is not.
    const bool fault = dynamic_cast<const comm::CommFault*>(&error) != nullptr;
    const int code = fault ? comm::kCommFaultExitCode : comm::kOtherErrorExitCode;
    std::fprintf(stderr, "tandem-train: %s: %s\n", fault ? "communication fault" : "error",
                 error.what());
    if (world.comm) {
      // Other ranks may be blocked on this one; the launcher stops them when this exits. The
      // store's host first lets the others finish their own reports.
      std::fflush(nullptr);
      if (fault && world.watchdog) world.watchdog->linger_for_peer_reports();
      std::_Exit(code);
    }
    return code;
  }
  return comm::kSuccessExitCode;
}
