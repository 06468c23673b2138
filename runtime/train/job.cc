// One training job in this process (job.h): what tandem-train's main did between parsing its flags
// and choosing its exit code.
#include "runtime/train/job.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>

#include "comm/bootstrap.h"
#include "comm/faults.h"
#include "comm/launcher_heartbeat.h"
#include "comm/watchdog.h"
#include "comm/world.h"
#include "monitoring/control_plane.h"
#include "monitoring/metrics.h"
#include "monitoring/metrics_exposure.h"
#include "monitoring/peak_flops.h"
#include "monitoring/status_page.h"
#include "runtime/core/host_name.h"
#include "runtime/core/logging.h"
#include "runtime/core/output_file.h"
#include "runtime/core/runtime_context.h"
#include "runtime/model/model_stats.h"
#include "runtime/train/data.h"
#include "runtime/train/metrics_observer.h"
#include "runtime/train/parallel_engine.h"

namespace tandem {
namespace {

// "--log-jsonl steps-{rank}.jsonl": every rank writes its own log, named by its rank.
constexpr std::string_view kRankPlaceholder = "{rank}";
std::string log_path_of_rank(std::string path, int rank) {
  for (size_t at = path.find(kRankPlaceholder); at != std::string::npos;
       at = path.find(kRankPlaceholder, at))
    path.replace(at, kRankPlaceholder.size(), std::to_string(rank));
  return path;
}

// Seconds since this process started (its static initialisation).
const auto process_start = std::chrono::steady_clock::now();
double seconds_since_start() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - process_start).count();
}

// tandem-launch's heartbeat: one socket per process, beating from the first job until the
// process exits, whatever runs in between (an embedding program may run several jobs).
void start_process_heartbeat() {
  static const std::unique_ptr<comm::LauncherHeartbeat> heartbeat =
      comm::LauncherHeartbeat::start_if_launched(comm::detect_launch());
}

// The runtime context, the thread pool and the communicators are the process's: one job at a
// time.
class OneJobAtATime {
 public:
  OneJobAtATime() {
    TANDEM_CONFIG_CHECK(!runtime().job_running.exchange(true),
                        "another run is training in this process; one run at a time (they share "
                        "the process's thread pool, rank and communicators): wait for it");
  }
  ~OneJobAtATime() { runtime().job_running = false; }
  OneJobAtATime(const OneJobAtATime&) = delete;
  OneJobAtATime& operator=(const OneJobAtATime&) = delete;
};

// Commands from code end with the run, whichever way it ends.
class CloseBoardAtEnd {
 public:
  explicit CloseBoardAtEnd(monitoring::ControlBoard* board) : board_(board) {}
  ~CloseBoardAtEnd() {
    if (board_) board_->close("the run has ended");
  }
  CloseBoardAtEnd(const CloseBoardAtEnd&) = delete;
  CloseBoardAtEnd& operator=(const CloseBoardAtEnd&) = delete;

 private:
  monitoring::ControlBoard* board_;
};

}  // namespace

std::pair<int, int> launched_rank_and_size() {
  const comm::LaunchInfo launch = comm::detect_launch();
  return {launch.rank, launch.world_size};
}

JobResult run_job(Config config, const JobOutputs& outputs, const JobHooks& hooks) {
  const CloseBoardAtEnd close_board(hooks.control_board.get());
  const OneJobAtATime one_job;
  JobOutputs args = outputs;
  comm::LaunchInfo launch;
  // Outlives the training block below: on a fault the communicators must not be torn down
  // (MPI_Finalize would wait for peers that may be stuck), the process exits instead.
  comm::World world;
  // Rank 0's control service; started before the job joins, so that a port it cannot have is a
  // configuration error before any rank waits for another, and status answers while it loads.
  std::unique_ptr<monitoring::ControlPlane> control;
  bool rank_logs = false;
  // The metrics outlive the trainer (its observers hold them) and a fault's report (a scrape may
  // still see the fault counted); the exposure (a server of its own, or the launcher's relay)
  // goes first, as it reads them.
  std::unique_ptr<monitoring::RankMetrics> metrics;
  std::unique_ptr<monitoring::StatusPage> status_page;  // rank 0's, on the metrics port
  std::unique_ptr<monitoring::MetricsExposure> metrics_server;
  std::string metrics_port_error;  // this rank's, in a multi-rank job: agreed on once joined
  // Every failure before the ranks talk is the user's to fix: a launcher must not restart it.
  try {
    start_process_heartbeat();
    validate_config(config);
    // The grid is checked before any rank talks to another (in one process too: parallel.ep = 4
    // there is refused, not ignored), and so are the expert exchanges a GPU job cannot use
    // (through host memory), before whether this machine has a GPU.
    launch = comm::detect_launch();
    check_device_grid(config, launch.world_size);
    require_device(config.train.device);
    comm::check_timeout_order(comm_timeout_ms(config.comm), rendezvous_timeout_ms(config.comm),
                              launch);
    parallel::make_grid_shape(launch.world_size, config);
    model_stats(config.model);  // refuses a model whose parameters one process cannot address
    // The data files exist, are regular files, are not one another and hold enough tokens.
    if (!hooks.data_source) static_cast<void>(Dataset::open(config.data, config.model));
    // Output paths are checked before training, so a bad path cannot throw a finished run away;
    // only rank 0 writes them.
    rank_logs = args.log_jsonl_path.find(kRankPlaceholder) != std::string::npos;
    args.log_jsonl_path = log_path_of_rank(args.log_jsonl_path, launch.rank);
    for (const auto& [path, what] :
         {std::pair{args.summary_path, "--summary-json"}, std::pair{args.trace_path, "--trace"},
          std::pair{args.log_jsonl_path, "--log-jsonl"}})
      if (!path.empty() && (launch.rank == 0 || (rank_logs && path == args.log_jsonl_path)))
        check_output_path(what, path);
    // A configured flight record directory is checked too: a record is written when the job
    // hangs, the worst moment to find that it cannot be.
    if (!config.comm.flight_record_dir.empty() && (launch.world_size > 1 || config.parallel.pp > 1))
      check_output_path("comm.flight_record_dir",
                        comm::flight_record_path(config.comm.flight_record_dir, launch.rank));
    if (!config.checkpoint.dir.empty() && launch.rank == 0)
      prepare_checkpoint_dir(config.checkpoint.dir);
    // The metrics port is bound before the job forms, so that a taken port is found at once; a
    // multi-rank job then stops on every rank together (below), not on this one alone. Under
    // tandem-launch the node's launcher binds one port for its ranks and answers every rank's
    // hello alike, so each stops at once with the same error.
    if (config.monitoring.metrics_port > 0) {
      metrics = std::make_unique<monitoring::RankMetrics>(
          monitoring::RankIdentity{launch.rank, host_name(), launch.restart_count});
      try {
        metrics_server = monitoring::open_metrics_exposure(
            config.monitoring,
            {launch.rank, launch.local_rank, launch.world_size, host_name(), launch.metrics_fd});
      } catch (const UsageError& error) {
        if (launch.world_size == 1 || launch.metrics_fd >= 0) throw;
        metrics_port_error = error.what();
      }
      // Rank 0 writes the targets file unless the launcher does (it checked the path then).
      if (!config.monitoring.sd_file.empty() && launch.rank == 0 && launch.metrics_fd < 0)
        check_output_path("monitoring.sd_file", config.monitoring.sd_file);
    }
    // Under tandem-launch a rank resumes by itself; a restarted attempt from the newest
    // checkpoint, even when the first one was told a path (that one is behind by now).
    if (!config.checkpoint.dir.empty() &&
        (launch.restart_count > 0 ? true : args.resume.empty() && std::getenv("TANDEM_RUN_ID")))
      args.resume = "auto";
    TANDEM_USER_CHECK(args.resume != "auto" || !config.checkpoint.dir.empty(),
                      "--resume auto reads checkpoint.dir, which is not set; set it, or give "
                      "--resume the path of a checkpoint");
    TANDEM_USER_CHECK(args.trace_path.empty() || launch.world_size > 1 || config.parallel.pp > 1,
                      "--trace records the pipeline executor; it needs a multi-rank run "
                      "(mpirun -np N tandem-train ...)");
    if (config.control.port > 0 && launch.rank == 0) {
      control = std::make_unique<monitoring::ControlPlane>(
          config.control, !config.checkpoint.dir.empty(), hooks.control_board);
      monitoring::JobStatus starting;
      starting.total_steps = config.train.steps;
      control->board().publish(starting);
    }
  } catch (const UsageError&) {
    throw;
  } catch (const std::exception& error) {
    throw UsageError(error.what());
  }
  JobResult result;
  result.rank = launch.rank;
  result.world_size = launch.world_size;
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
      if (metrics) {
        const double failed = comm::all_reduce_value(
            *world.comm, metrics_port_error.empty() ? 0.0 : launch.rank + 1.0,
            comm::ReduceOp::kMax);
        if (failed > 0)
          throw UsageError(
              metrics_port_error.empty()
                  ? detail::concat("monitoring.metrics_port: rank ", static_cast<int>(failed) - 1,
                                   " cannot serve its metrics (its own error says why); choose "
                                   "another monitoring.metrics_port, or 0 to turn metrics off")
                  : metrics_port_error);
      }
    }
    const bool reports = !parallel || world.comm->rank() == 0;
    result.reports = reports;
    if (reports) {
      log_info(hooks.program, ": ", args.config_label, ", ", runtime().threads, " threads",
               parallel ? detail::concat(" per rank, ", world.comm->size(), " ranks (",
                                         world.description, ")")
                        : "");
      // What this run sets, not all ~80 keys: the rest are the defaults (docs/configuration.md),
      // and --summary-json records the whole effective config.
      std::string changed;
      std::istringstream defaults_text(config_to_string(Config{})), text(config_to_string(config));
      std::set<std::string> defaults;
      for (std::string line; std::getline(defaults_text, line);) defaults.insert(line);
      for (std::string line; std::getline(text, line);)
        if (!line.empty() && !defaults.count(line)) changed += "\n  " + line;
      log_info(
          "config (what differs from the defaults):", changed.empty() ? " nothing" : changed,
          hooks.data_source ? "\n  (tokens from the program's data source, not data.path)" : "");
    }
    if (parallel) {
      ParallelEngineOptions options;
      options.trace_path = args.trace_path;
      options.data_source = hooks.data_source;
      engine = std::make_unique<ParallelEngine>(config, world, options);
    } else {
      engine = std::make_unique<SingleProcessEngine>(config, hooks.data_source);
    }
    if (metrics) {
      // Served from here on, every family with its series; the peak is measured while the other
      // ranks, which built their engines together with this one, measure theirs.
      metrics->place(metrics_place(*engine, config.model));
      // The CPU's sgemm ceiling is no ceiling for a GPU step: there the MFU gauge stays unset
      // (scripts/gpu-check measures the GPU's own GEMM beside its training steps).
      const double peak =
          config.train.device == DeviceType::kCPU ? monitoring::measure_sgemm_peak_flops() : 0.0;
      metrics->set_peak_flops(peak);
      metrics_server->serve(*metrics);
      if (reports) {
        status_page = std::make_unique<monitoring::StatusPage>(monitoring::StatusPageIdentity{
            config.monitoring.job, args.config_label, host_name(), launch.restart_count});
        monitoring::JobStatus starting;
        starting.total_steps = config.train.steps;
        status_page->update(starting);
        metrics_server->serve_status([page = status_page.get()] { return page->render(); });
      }
      // Every rank of a job has a launcher's relay or none, so all of them take this alike.
      if (metrics_server->ranks_write_targets_file())
        publish_scrape_targets(config.monitoring, engine->job_world(),
                               {metrics_server->endpoint(), launch.rank, host_name()});
      if (reports)
        log_info("metrics: http://", metrics_server->endpoint(), "/metrics",
                 !metrics_server->ranks_write_targets_file()
                     ? " (tandem-launch's node endpoint: every rank of the node)"
                 : parallel ? " (each rank on monitoring.metrics_port + LOCAL_RANK)"
                            : "",
                 "; live page: http://", metrics_server->endpoint(), "/status", "; peak sgemm ",
                 peak / 1e9, " GFLOP/s on ", runtime().threads, " thread",
                 runtime().threads == 1 ? "" : "s");
    }
    // A restarted attempt's phases, for the launcher's records: joining the job, loading the
    // checkpoint, the first step (the launcher itself measures detection and stopping).
    const double joined_seconds = seconds_since_start();
    double load_seconds = 0;
    std::string resumed_from;
    std::optional<int64_t> resumed_step;
    if (!args.resume.empty()) {
      const auto load_start = std::chrono::steady_clock::now();
      TrainingState state = engine->state();
      const std::string from = args.resume == "auto" ? config.checkpoint.dir : args.resume;
      const std::optional<LoadedCheckpoint> loaded =
          load_checkpoint(from, args.resume == "auto", config, state, engine->job_world());
      // Only "auto" may find nothing (a first attempt); a path the user named must hold one.
      if (!loaded && args.resume != "auto")
        throw UsageError(detail::concat("--resume ", from,
                                        ": no checkpoint there (neither a step-NNNNNNNN directory "
                                        "nor a directory holding one)"));
      load_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
      if (loaded) {
        resumed_from = loaded->path;
        resumed_step = loaded->step;
        engine->set_steps_taken(loaded->step);
        engine->set_learning_rate_change(loaded->learning_rate_change);  // an operator's, kept
      } else {
        if (reports) log_info("no checkpoint in ", from, " yet: starting from step 0");
        resumed_step = 0;  // asked to resume: an empty directory is this run's
      }
      if (loaded && loaded->step >= config.train.steps) {
        if (reports)
          log_info("checkpoint ", loaded->path, " is at step ", loaded->step,
                   ", train.steps = ", config.train.steps,
                   ": nothing left to train (raise train.steps to go on)");
        result.nothing_to_train = true;
        result.summary.steps = result.summary.first_step = loaded->step;
        return result;
      }
    }
    Trainer trainer(config, std::move(engine));
    if (control)
      trainer.set_control(&control->board());
    else if (hooks.control_board && launch.rank == 0)
      trainer.set_control(hooks.control_board.get());
    if ((reports || rank_logs) && !args.log_jsonl_path.empty())
      trainer.set_step_log(std::make_unique<StepLog>(args.log_jsonl_path), launch.restart_count);
    if (!config.checkpoint.dir.empty())
      trainer.set_checkpoints(std::make_unique<CheckpointWriter>(
          config, trainer.engine().job_world(), trainer.engine().grid_description(), resumed_step));
    if (metrics)
      record_training_metrics(trainer, *metrics, model_stats(config.model).flops_per_token,
                              parallel ? world.comm->size() : 1);
    if (status_page) feed_status_page(trainer, *status_page);
    const char* log_dir = std::getenv("TANDEM_LOG_DIR");
    if (reports && launch.restart_count > 0 && log_dir && *log_dir) {
      trainer.add_step_observer([=, first = true](const StepRecord& r) mutable {
        if (!first) return;
        first = false;
        const nlohmann::json phases = {{"attempt", launch.restart_count},
                                       {"resumed_from", resumed_from},
                                       {"first_step", r.step},
                                       {"start_to_joined_seconds", joined_seconds},
                                       {"load_seconds", load_seconds},
                                       {"first_step_seconds", r.seconds},
                                       {"start_to_first_step_seconds", seconds_since_start()}};
        const std::string path = detail::concat(log_dir, "/resume-", launch.restart_count, ".json");
        try {
          write_output_file("restart record", path, phases.dump(2) + "\n");
        } catch (const Error& e) {
          log_warn(e.what());
        }
      });
    }
    if (hooks.on_step) trainer.add_step_observer(hooks.on_step);
    if (hooks.on_evaluation) trainer.add_evaluation_observer(hooks.on_evaluation);
    if (hooks.stop_requested) trainer.set_stop_request(hooks.stop_requested);
    result.summary = trainer.run();
    TrainSummary& summary = result.summary;
    // The last checkpoint (after the final step, or the stop) must be in place: a run that says
    // "resume from here" or "done" while it is not would lose the steps since the one before.
    const int64_t newest =
        summary.checkpoints.is_null() ? -1 : summary.checkpoints["last_step"].get<int64_t>();
    if (!summary.checkpoints.is_null() && newest != summary.steps) {
      result.failure = detail::concat(
          "the checkpoint of step ", summary.steps, " could not be written (see above); ",
          newest >= 0 ? detail::concat("the newest complete one is step ", newest)
                      : std::string("no checkpoint of this run is complete"),
          summary.stopped ? ": stopped without it" : "");
      if (reports) log_error(result.failure);
      return result;
    }
    if (summary.stopped) {
      if (reports)
        log_info(
            "stopped on request (",
            summary.stopped_by_control ? "the control service's Stop" : hooks.stop_request_name,
            ") after step ", summary.steps,
            config.checkpoint.dir.empty()
                ? "; nothing was saved (checkpoint.dir is not set)"
                : detail::concat(
                      "; checkpoint ", config.checkpoint.dir, "/", checkpoint_name(summary.steps),
                      " written: run the same ",
                      summary.stopped_by_control ? "command with --resume auto" : "command",
                      " to resume"));
      return result;
    }
    if (!reports) return result;
    char line[256];
    std::snprintf(line, sizeof line,
                  "summary: %lld steps | final loss %.4f | final held-out loss %.4f | %.0f tok/s | "
                  "%lld parameters | %.2f MFLOP/token",
                  static_cast<long long>(summary.steps), summary.losses.back(),
                  summary.eval_losses.back().second, summary.tokens_per_second,
                  static_cast<long long>(summary.params), summary.flops_per_token / 1e6);
    log_info(line);
    if (!summary.checkpoints.is_null()) {
      const auto& c = summary.checkpoints;
      char text[256];
      std::snprintf(text, sizeof text,
                    "checkpoints: %lld written to %s | %.1f ms of the training thread each "
                    "(%.2f%% of a step) | written in the background at %.0f MB/s (rank 0)",
                    static_cast<long long>(c["committed"].get<int64_t>()),
                    c["dir"].get<std::string>().c_str(), c["in_step_seconds"].get<double>() * 1e3,
                    c["in_step_fraction_of_step"].get<double>() * 100,
                    c["write_bytes_per_second"].get<double>() / 1e6);
      log_info(text);
    }
    // The trace's own failure was reported where it happened, with the trace itself.
    const bool outputs_lost = summary.engine_fields.contains("trace_error");
    if (!args.summary_path.empty()) {
      const std::string text = summary.to_json(config).dump(2) + "\n";
      try {
        write_output_file("--summary-json", args.summary_path, text);
        log_info("summary written to ", args.summary_path);
      } catch (const Error& error) {
        // The run is finished and its result must not be lost with the file.
        std::fprintf(stderr, "%s: error: %s; the summary follows on stderr\n%s",
                     hooks.program.c_str(), error.what(), text.c_str());
        result.failure = error.what();
        return result;
      }
    }
    // Where everything went, in one place at the end of the console.
    std::string where;
    const auto output = [&](const std::string& what) { where += "\n  " + what; };
    if (!summary.checkpoints.is_null())
      output(detail::concat("checkpoints: ", config.checkpoint.dir, " (newest ",
                            checkpoint_name(summary.steps), "; tandem-checkpoint verify|export)"));
    if (!args.log_jsonl_path.empty()) output("every step: " + args.log_jsonl_path);
    if (!args.summary_path.empty() && !outputs_lost) output("summary: " + args.summary_path);
    if (!args.trace_path.empty() && !outputs_lost)
      output("trace of the last step: " + args.trace_path +
             " (chrome://tracing or https://ui.perfetto.dev)");
    if (metrics_server)
      output(detail::concat("metrics: http://", metrics_server->endpoint(),
                            "/metrics and the live page /status (until this process exits)"));
    if (!config.monitoring.sd_file.empty() && metrics)
      output("Prometheus targets: " + config.monitoring.sd_file);
    if (!where.empty()) log_info("outputs:", where);
    if (outputs_lost)
      result.failure = detail::concat("the trace of the last step could not be written to ",
                                      args.trace_path, " (see above)");
    return result;
  } catch (const std::exception& error) {
    const bool fault = dynamic_cast<const comm::CommFault*>(&error) != nullptr;
    if (metrics && fault)
      metrics->record_comm_fault(
          dynamic_cast<const comm::CommTimeout*>(&error) ? monitoring::CommFaultKind::kTimeout
          : dynamic_cast<const comm::StoreLost*>(&error) ? monitoring::CommFaultKind::kStoreLost
                                                         : monitoring::CommFaultKind::kPeerLost);
    if (world.comm) {
      // Other ranks may be blocked on this one; the launcher stops them when this exits. The
      // store's host first lets the others finish their own reports.
      const bool usage = dynamic_cast<const UsageError*>(&error) != nullptr;
      std::fprintf(stderr, "%s: %s: %s\n", hooks.program.c_str(),
                   fault ? "communication fault" : "error", error.what());
      std::fflush(nullptr);
      if (fault && world.watchdog) world.watchdog->linger_for_peer_reports();
      std::_Exit(fault   ? comm::kCommFaultExitCode
                 : usage ? comm::kUsageExitCode
                         : comm::kOtherErrorExitCode);
    }
    throw;
  }
}

}  // namespace tandem
