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

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
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

// Digits only (no sign, no spaces), in [low, high].
int to_int(const std::string& flag, const std::string& text, int low, int high) {
  int64_t value = 0;
  bool ok = !text.empty() && text.size() <= 10;
  for (char c : text) ok = ok && c >= '0' && c <= '9', value = value * 10 + (c - '0');
  TANDEM_USER_CHECK(ok && value >= low && value <= high, flag, " = '", text,
                    "': expected an integer from ", low, " to ", high, "\n", kUsage);
  return static_cast<int>(value);
}

double to_seconds(const std::string& flag, const std::string& text) {
  size_t used = 0;
  double value = -1;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TANDEM_USER_CHECK(
      used == text.size() && !text.empty() && text[0] != ' ' && value >= 0 && value <= 3600, flag,
      " = '", text, "': expected seconds from 0 to 3600\n", kUsage);
  return value;
}

// The program as a path that can be executed, found once before any rank starts: a name
// without a slash is looked for next to tandem-launch (tandem-train is built there), then on
// PATH. A program that cannot run is a usage error, not a failed rank to restart.
std::string resolve_program(const std::string& name) {
  auto executable = [](const std::filesystem::path& p) {
    std::error_code error;
    return std::filesystem::is_regular_file(p, error) && ::access(p.c_str(), X_OK) == 0;
  };
  if (name.find('/') != std::string::npos) {
    TANDEM_USER_CHECK(executable(name), "the program '", name,
                      "' is not an executable file; give the path of one");
    return name;
  }
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error && executable(self.parent_path() / name)) return self.parent_path() / name;
  const char* path = std::getenv("PATH");
  const std::string dirs = path ? path : "/usr/bin:/bin";
  for (size_t start = 0; start <= dirs.size();) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    const std::filesystem::path candidate =
        std::filesystem::path(end > start ? dirs.substr(start, end - start) : ".") / name;
    if (executable(candidate)) return candidate;
    start = end + 1;
  }
  TANDEM_USER_CHECK(false, "the program '", name,
                    "' is neither next to tandem-launch nor on PATH; give its path");
  return name;
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
    if (arg == "-h") throw Error(kUsage);
    if (!arg.starts_with("--")) break;  // the program and its arguments
    // --flag value, or --flag=value.
    const size_t equals = arg.find('=');
    const bool has_inline = equals != std::string::npos;
    const std::string flag = has_inline ? arg.substr(0, equals) : arg;
    auto value = [&]() -> std::string {
      if (has_inline) return arg.substr(equals + 1);
      TANDEM_USER_CHECK(i + 1 < argc && !std::string(argv[i + 1]).starts_with("--"), flag,
                        " needs a value\n", kUsage);
      return argv[++i];
    };
    if (flag == "--nproc-per-node")
      o.nproc_per_node = to_int(flag, value(), 1, 4096);
    else if (flag == "--nnodes")
      o.nnodes = to_int(flag, value(), 1, 65536);
    else if (flag == "--node-rank")
      o.node_rank = to_int(flag, value(), 0, 65535);
    else if (flag == "--master-addr")
      o.master_addr = value();
    else if (flag == "--master-port")
      o.master_port = to_int(flag, value(), 1, 65535);
    else if (flag == "--max-restarts")
      o.max_restarts = to_int(flag, value(), 0, 1000000);
    else if (flag == "--log-dir")
      o.log_dir = value();
    else if (flag == "--grace-period-s")
      o.grace_period_s = to_seconds(flag, value());
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
  o.program[0] = resolve_program(o.program[0]);
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
      for (const RankSpec& spec : specs(options, "", 0))
        check_output_path("--log-dir", spec.log_path);
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "tandem-launch: error: %s\n", error.what());
    return comm::kUsageExitCode;
  }
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  // SIGHUP (a closed terminal or ssh session) and SIGQUIT stop the job the same way; a closed
  // stdout reader must not kill the launcher (SIGPIPE): the write fails instead.
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::sigaction(s, &action, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
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
      if (result.first_failure) {
        const RankExit& failed = *result.first_failure;
        record["cause"] = failed.describe();
        record["failed_rank"] = failed.rank;
        record["exit_code"] = failed.exit_code;
        record["signal"] = failed.signal ? signal_name(failed.signal) : "";
        code = failed.signal ? comm::kCommFaultExitCode : failed.exit_code;
        if (!retryable(failed))
          verdict = failed.exit_code == comm::kUsageExitCode
                        ? "a configuration or usage error; restarting would fail the same way"
                        : detail::concat("an error a restart would repeat (exit ", failed.exit_code,
                                         "); not restarting");
        else if (attempt >= options.max_restarts)
          verdict =
              "no restarts left (--max-restarts " + std::to_string(options.max_restarts) + ")";
      }
      if (result.stop_signal) {  // the operator's stop wins over a restart
        record["stopped_by"] = signal_name(result.stop_signal);
        if (!result.first_failure)
          record["cause"] = "stopped by " + signal_name(result.stop_signal);
        code = 128 + result.stop_signal;
        verdict = "stopped by " + signal_name(result.stop_signal) + "; not restarting";
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
      // A little longer each time, so a failure that repeats at once cannot spin.
      const double backoff_s = std::min(5.0, 0.1 * (1 << std::min(attempt, 6)));
      std::fprintf(stderr,
                   "tandem-launch: %s; the others stopped in %.2f s; restarting every rank in "
                   "%.1f s\n",
                   what.c_str(), result.stop_seconds, backoff_s);
      std::this_thread::sleep_for(std::chrono::duration<double>(backoff_s));
      if (g_stop.count > 0) {
        std::fprintf(stderr, "tandem-launch: stopped by %s before the restart\n",
                     signal_name(g_stop.signal).c_str());
        return 128 + g_stop.signal;
      }
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "tandem-launch: error: %s\n", error.what());
    return comm::kOtherErrorExitCode;
  }
}
