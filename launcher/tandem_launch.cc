// tandem-launch: starts a job's local ranks the torchrun way (RANK, LOCAL_RANK, WORLD_SIZE,
// LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT, plus TANDEM_RUN_ID and
// TANDEM_RESTART_COUNT), prints their output with the rank in front, forwards SIGINT/SIGTERM,
// and when a rank fails stops the others and restarts them all, up to --max-restarts — but only
// for a failure a restart can help (a communication fault, exit 3, or a rank killed by a
// signal), never for a configuration or usage error (exit 2). Each attempt's failure goes to a
// JSON record in --log-dir.
//   tandem-launch [--nproc-per-node N] [--nnodes N --node-rank R --master-addr A --master-port P]
//                 [--max-restarts K] [--log-dir DIR] [--grace-period-s S] [--] [PROGRAM ARGS...]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "comm/faults.h"
#include "launcher/local_ranks.h"
#include "runtime/core/errors.h"
#include "runtime/core/output_file.h"

namespace {

using namespace tandem;
using namespace tandem::launcher;

constexpr const char* kUsage =
    "usage: tandem-launch [--nproc-per-node N] [--nnodes N --node-rank R --master-addr A\n"
    "                     --master-port P] [--max-restarts K] [--log-dir DIR]\n"
    "                     [--grace-period-s S] [--] [PROGRAM ARGS...]   (default: tandem-train)\n";

struct Options {
  int nproc_per_node = 1, nnodes = 1, node_rank = 0, master_port = 29500, max_restarts = 0;
  std::string master_addr = "127.0.0.1", log_dir;
  double grace_period_s = 10;
  std::vector<std::string> program;
};

int to_int(const std::string& flag, const std::string& text, int low, int high) {
  size_t used = 0;
  int value = 0;
  try {
    value = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TANDEM_USER_CHECK(used == text.size() && !text.empty() && value >= low && value <= high, flag,
                    " = '", text, "': expected an integer from ", low, " to ", high, "\n", kUsage);
  return value;
}

Options parse(int argc, char** argv) {
  Options o;
  int i = 1;
  for (; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (!arg.starts_with("--")) break;  // the program and its arguments
    auto value = [&]() -> std::string {
      TANDEM_USER_CHECK(i + 1 < argc && !std::string(argv[i + 1]).starts_with("--"), arg,
                        " needs a value\n", kUsage);
      return argv[++i];
    };
    if (arg == "--nproc-per-node")
      o.nproc_per_node = to_int(arg, value(), 1, 4096);
    else if (arg == "--nnodes")
      o.nnodes = to_int(arg, value(), 1, 65536);
    else if (arg == "--node-rank")
      o.node_rank = to_int(arg, value(), 0, 65535);
    else if (arg == "--master-addr")
      o.master_addr = value();
    else if (arg == "--master-port")
      o.master_port = to_int(arg, value(), 1, 65535);
    else if (arg == "--max-restarts")
      o.max_restarts = to_int(arg, value(), 0, 1000000);
    else if (arg == "--log-dir")
      o.log_dir = value();
    else if (arg == "--grace-period-s")
      o.grace_period_s = to_int(arg, value(), 0, 3600);
    else if (arg == "--help" || arg == "-h")
      throw Error(kUsage);
    else
      TANDEM_USER_CHECK(false, "unknown option '", arg, "'\n", kUsage);
  }
  TANDEM_USER_CHECK(o.node_rank < o.nnodes, "--node-rank ", o.node_rank, " must be below --nnodes ",
                    o.nnodes);
  TANDEM_USER_CHECK(o.nnodes == 1 || o.master_addr != "127.0.0.1", "--nnodes ", o.nnodes,
                    " needs --master-addr: the address of node 0 that every "
                    "node can reach (127.0.0.1 is each node itself)");
  for (; i < argc; ++i) o.program.push_back(argv[i]);
  if (o.program.empty()) o.program.push_back("tandem-train");
  return o;
}

// A run id shared by every attempt (TANDEM_RUN_ID from the environment when set, as a multi-node
// job's nodes must agree on it; otherwise random).
std::string run_id() {
  if (const char* given = std::getenv("TANDEM_RUN_ID"); given && *given) return given;
  std::random_device device;
  char text[17];
  std::snprintf(text, sizeof text, "%08x%08x", device(), device());
  return text;
}

std::vector<RankSpec> specs(const Options& o, const std::string& id, int attempt) {
  std::vector<RankSpec> out;
  const int world = o.nnodes * o.nproc_per_node;
  for (int local = 0; local < o.nproc_per_node; ++local) {
    RankSpec s;
    s.local_rank = local;
    s.rank = o.node_rank * o.nproc_per_node + local;
    s.argv = o.program;
    s.env = {{"RANK", std::to_string(s.rank)},
             {"LOCAL_RANK", std::to_string(local)},
             {"WORLD_SIZE", std::to_string(world)},
             {"LOCAL_WORLD_SIZE", std::to_string(o.nproc_per_node)},
             {"GROUP_RANK", std::to_string(o.node_rank)},
             {"MASTER_ADDR", o.master_addr},
             {"MASTER_PORT", std::to_string(o.master_port)},
             {"TANDEM_RUN_ID", id},
             {"TANDEM_RESTART_COUNT", std::to_string(attempt)}};
    if (!o.log_dir.empty()) {
      s.env["TANDEM_LOG_DIR"] = o.log_dir;  // flight records go there too
      s.log_path = o.log_dir + "/rank" + std::to_string(s.rank) + ".log";
    }
    out.push_back(std::move(s));
  }
  return out;
}

// Whether a restart can help: a communication fault (a peer lost, a collective that timed out)
// or a rank killed by a signal; not a configuration error (2) or another error (1), which would
// fail the same way again.
bool retryable(const RankExit& e) {
  return e.signal != 0 || e.exit_code == comm::kCommFaultExitCode;
}

StopRequest g_stop;  // written only by the signal handler: the one way it can reach the loop
void on_stop_signal(int signal) {
  g_stop.signal = signal;
  g_stop.count = g_stop.count + 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parse(argc, argv);
    if (!options.log_dir.empty()) {
      std::error_code error;
      std::filesystem::create_directories(options.log_dir, error);
      TANDEM_USER_CHECK(!error, "--log-dir '", options.log_dir,
                        "': cannot create it: ", error.message());
      check_output_path("--log-dir", options.log_dir + "/attempt-0.json");
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "tandem-launch: error: %s\n", error.what());
    return comm::kUsageExitCode;
  }
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  const std::string id = run_id();
  char host[256] = "?";
  ::gethostname(host, sizeof host - 1);
  try {
    for (int attempt = 0;; ++attempt) {
      std::fprintf(stderr,
                   "tandem-launch: attempt %d of at most %d: %d local ranks of %d (run %s)\n",
                   attempt, options.max_restarts + 1, options.nproc_per_node,
                   options.nnodes * options.nproc_per_node, id.c_str());
      const AttemptResult result = run_attempt(
          specs(options, id, attempt),
          std::chrono::milliseconds(static_cast<int64_t>(options.grace_period_s * 1000)), g_stop);
      if (!result.first_failure && !result.stop_signal) return comm::kSuccessExitCode;
      nlohmann::json record = {{"attempt", attempt}, {"run_id", id}, {"host", host}};
      int code = comm::kOtherErrorExitCode;
      std::string verdict;
      if (result.stop_signal) {
        record["cause"] = "stopped by " + signal_name(result.stop_signal);
        code = 128 + result.stop_signal;
        verdict = "stopped by " + signal_name(result.stop_signal) + "; not restarting";
      } else {
        const RankExit& failed = *result.first_failure;
        record["cause"] = failed.describe();
        record["failed_rank"] = failed.rank;
        record["exit_code"] = failed.exit_code;
        record["signal"] = failed.signal ? signal_name(failed.signal) : "";
        code = failed.signal ? comm::kCommFaultExitCode : failed.exit_code;
        if (!retryable(failed))
          verdict = failed.exit_code == comm::kUsageExitCode
                        ? "a configuration or usage error; restarting would fail the same way"
                        : "an error a restart would repeat (exit 1); not restarting";
        else if (attempt >= options.max_restarts)
          verdict =
              "no restarts left (--max-restarts " + std::to_string(options.max_restarts) + ")";
      }
      record["detect_seconds"] = result.detect_seconds;
      record["stop_seconds"] = result.stop_seconds;
      nlohmann::json exits = nlohmann::json::array();
      for (const RankExit& e : result.exits)
        exits.push_back({{"rank", e.rank},
                         {"exit", e.describe()},
                         {"stopped_by_launcher", e.stopped_by_launcher},
                         {"seconds", e.seconds}});
      record["ranks"] = exits;
      record["restarting"] = verdict.empty();
      if (!options.log_dir.empty())
        write_output_file("--log-dir",
                          options.log_dir + "/attempt-" + std::to_string(attempt) + ".json",
                          record.dump(2) + "\n");
      const std::string what = result.first_failure
                                   ? detail::concat("rank ", result.first_failure->rank, " on ",
                                                    host, ": ", result.first_failure->describe(),
                                                    " after ", result.first_failure->seconds, " s")
                                   : std::string(record["cause"]);
      if (!verdict.empty()) {
        std::fprintf(stderr, "tandem-launch: %s; %s (exit %d)\n", what.c_str(), verdict.c_str(),
                     code);
        return code;
      }
      std::fprintf(stderr,
                   "tandem-launch: %s; the others stopped in %.2f s; restarting every rank\n",
                   what.c_str(), result.stop_seconds);
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "tandem-launch: error: %s\n", error.what());
    return comm::kOtherErrorExitCode;
  }
}
