// tandem-launch: starts a job's local ranks the torchrun way (RANK, LOCAL_RANK, WORLD_SIZE,
// LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT, plus TANDEM_RUN_ID and
// TANDEM_RESTART_COUNT), serves the job's rendezvous store itself on the master node for the whole
// run (so a rank's death does not take the store with it), watches every rank's heartbeat,
// prints their output with the rank in front, and forwards SIGINT/SIGTERM. When a rank fails —
// it exits other than with 0 or 4 (stopped on request), or freezes (no heartbeat for
// --heartbeat-timeout-s; its stack is recorded first) — it ends the others without a checkpoint
// and restarts them all, up to --max-restarts, but only for a failure a restart can help (a
// communication fault, exit 3, a rank killed by a signal, or a frozen rank), never for a
// configuration or usage error (exit 2). Each attempt's failure goes to a JSON record in
// --log-dir.
//   tandem-launch [--nproc-per-node N] [--nnodes N --node-rank R --master-addr A --master-port P]
//                 [--max-restarts K] [--log-dir DIR] [--grace-period-s S] [--failure-grace-s S]
//                 [--heartbeat-timeout-s S] [--heartbeat-interval-s S] [--] [PROGRAM ARGS...]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "comm/faults.h"
#include "comm/store.h"
#include "launcher/local_ranks.h"
#include "launcher/node_metrics.h"
#include "launcher/node_rendezvous.h"
#include "runtime/core/errors.h"
#include "runtime/core/host_name.h"
#include "runtime/core/output_file.h"

namespace {

using namespace tandem;
using namespace tandem::launcher;

constexpr const char* kUsage =
    "usage: tandem-launch [--nproc-per-node N] [--nnodes N --node-rank R --master-addr A\n"
    "                     --master-port P] [--max-restarts K] [--log-dir DIR]\n"
    "                     [--grace-period-s S] [--failure-grace-s S]\n"
    "                     [--heartbeat-timeout-s S] [--heartbeat-interval-s S]\n"
    "                     [--rendezvous-timeout-s S]\n"
    "                     [--] [PROGRAM ARGS...]   (default: tandem-train)\n"
    "  --master-port P         node 0 serves the rendezvous store there (default 29500; 0: any\n"
    "                          free port, one node only)\n"
    "  --grace-period-s S      after forwarding the operator's SIGTERM or SIGINT, SIGKILL after S\n"
    "                          (default 10)\n"
    "  --failure-grace-s S     after a rank fails, the others get SIGINT, SIGKILL after S\n"
    "                          (default 2); never SIGTERM, which asks tandem-train to checkpoint\n"
    "  --heartbeat-timeout-s S a rank silent this long is frozen: its stack is recorded, the\n"
    "                          attempt restarted (default 360, above comm.timeout_s's 300; 0: "
    "off)\n"
    "  --rendezvous-timeout-s S  several nodes: how long a node's launcher waits for the others\n"
    "                          (to start an attempt, for node 0 to come back; default 600)\n"
    "  --heartbeat-interval-s S  how often ranks beat (default 1; the timeout must be over 3 of\n"
    "                          them)\n";

struct Options {
  int nproc_per_node = 1, nnodes = 1, node_rank = 0, master_port = 29500, max_restarts = 0;
  std::string master_addr = "127.0.0.1", log_dir;
  double grace_period_s = 10, failure_grace_s = 2;
  // Above tandem-train's default comm.timeout_s (300 s), so that the watchdog reports a hang
  // before the launcher ends it, with room for its report; below comm.rendezvous_timeout_s's
  // default (600 s).
  double heartbeat_timeout_s = 360, heartbeat_interval_s = 1;
  double rendezvous_timeout_s = 600;
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

double to_seconds(const std::string& flag, const std::string& text, double max_s = 3600) {
  size_t used = 0;
  double value = -1;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TANDEM_USER_CHECK(
      used == text.size() && !text.empty() && text[0] != ' ' && value >= 0 && value <= max_s, flag,
      " = '", text, "': expected seconds from 0 to ", max_s, "\n", kUsage);
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
      o.master_port = to_int(flag, value(), 0, 65535);
    else if (flag == "--max-restarts")
      o.max_restarts = to_int(flag, value(), 0, 1000000);
    else if (flag == "--log-dir")
      o.log_dir = value();
    else if (flag == "--grace-period-s")
      o.grace_period_s = to_seconds(flag, value());
    else if (flag == "--failure-grace-s")
      o.failure_grace_s = to_seconds(flag, value());
    else if (flag == "--heartbeat-timeout-s")
      o.heartbeat_timeout_s = to_seconds(flag, value(), 2 * 86400);  // above comm.timeout_s's max
    else if (flag == "--heartbeat-interval-s")
      o.heartbeat_interval_s = to_seconds(flag, value());
    else if (flag == "--rendezvous-timeout-s")
      o.rendezvous_timeout_s = to_seconds(flag, value(), 86400);
    else if (arg == "--help" || arg == "-h")
      throw Error(kUsage);
    else
      TANDEM_USER_CHECK(false, "unknown option '", arg, "'\n", kUsage);
  }
  TANDEM_USER_CHECK(o.node_rank < o.nnodes, "--node-rank ", o.node_rank, " must be below --nnodes ",
                    o.nnodes);
  TANDEM_USER_CHECK(o.master_port != 0 || o.nnodes == 1,
                    "--master-port 0 picks a free port on this node; a job of --nnodes ", o.nnodes,
                    " needs a port every node knows: give one");
  TANDEM_USER_CHECK(o.nnodes == 1 || o.master_addr != "127.0.0.1", "--nnodes ", o.nnodes,
                    " needs --master-addr: the address of node 0 that every "
                    "node can reach (127.0.0.1 is each node itself)");
  TANDEM_USER_CHECK(o.heartbeat_interval_s >= 0.01, "--heartbeat-interval-s ",
                    o.heartbeat_interval_s, ": expected at least 0.01 s\n", kUsage);
  // A heartbeat older than 3 intervals is stale (its rank's stack is recorded when the attempt
  // stops); a timeout inside that would call a rank frozen that merely missed a beat or two.
  TANDEM_USER_CHECK(
      o.heartbeat_timeout_s == 0 || o.heartbeat_timeout_s > 3 * o.heartbeat_interval_s,
      "--heartbeat-timeout-s ", o.heartbeat_timeout_s,
      " must be more than 3 x --heartbeat-interval-s ", o.heartbeat_interval_s, " = ",
      3 * o.heartbeat_interval_s,
      " s (a heartbeat is stale after 3 intervals): raise --heartbeat-timeout-s or "
      "lower --heartbeat-interval-s (0 turns heartbeats off)");
  for (; i < argc; ++i) o.program.push_back(argv[i]);
  if (o.program.empty()) o.program.push_back("tandem-train");
  o.program[0] = resolve_program(o.program[0]);
  return o;
}

std::string random_hex(int words) {
  std::random_device device;
  std::string text;
  char word[9];
  for (int i = 0; i < words; ++i) {
    std::snprintf(word, sizeof word, "%08x", device());
    text += word;
  }
  return text;
}

// A run id shared by every attempt: TANDEM_RUN_ID from the environment when set; otherwise, on
// one node, random; on several, one every node computes alike (each serves or reaches the one
// store of this address and port, so no other run's keys are there).
std::string run_id(const Options& o) {
  if (const char* given = std::getenv("TANDEM_RUN_ID"); given && *given) return given;
  if (o.nnodes > 1) return "launch-" + o.master_addr + "-" + std::to_string(o.master_port);
  return random_hex(2);
}

// The secret every store client must present: TANDEM_STORE_TOKEN when set; on one node a random
// one per run; on several, only the operator can give every node the same, so none.
std::string store_token(const Options& o) {
  if (const char* given = std::getenv("TANDEM_STORE_TOKEN"); given && *given) return given;
  if (o.nnodes > 1) return "";
  return random_hex(4);
}

struct Job {
  std::string run_id;
  std::string token;
  std::string host;
};

std::vector<RankSpec> specs(const Options& o, const Job& job, int attempt) {
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
             {"TANDEM_RUN_ID", job.run_id},
             {"TANDEM_RESTART_COUNT", std::to_string(attempt)},
             // Every output line gets "[rank R]" here; tandem's logging then adds none.
             {"TANDEM_OUTPUT_PREFIXED", "1"},
             // The launcher of node 0 serves the store on MASTER_PORT: no rank serves one, and
             // no rule of the environment (torchrun's agent store) moves it.
             {"TANDEM_STORE_SERVED_BY_LAUNCHER", "1"},
             {"TANDEM_STORE_PORT", std::to_string(o.master_port)}};
    if (!job.token.empty()) s.env["TANDEM_STORE_TOKEN"] = job.token;
    const std::string stack_file =
        "stack-attempt" + std::to_string(attempt) + "-rank" + std::to_string(s.rank) + ".txt";
    if (!o.log_dir.empty()) {
      s.env["TANDEM_LOG_DIR"] = o.log_dir;  // flight records go there too
      s.log_path = o.log_dir + "/rank" + std::to_string(s.rank) + ".log";
      s.stack_path = o.log_dir + "/" + stack_file;
    } else {
      s.stack_path = "tandem-" + stack_file;  // in the working directory, as flight records
    }
    out.push_back(std::move(s));
  }
  return out;
}

// Whether a restart can help: a communication fault (a peer lost, a collective that timed out),
// a rank killed by a signal, or a frozen rank; not a configuration error (2) or another error
// (1), which would fail the same way again.
bool retryable(const RankExit& e) {
  return e.frozen || e.signal != 0 || e.exit_code == comm::kCommFaultExitCode;
}

StopRequest g_stop;  // written only by the signal handler: the one way it can reach the loop
void on_stop_signal(int signal) {
  g_stop.signal = signal;
  g_stop.count = g_stop.count + 1;
}

}  // namespace

namespace {

// Node 0's launcher serves the job's store for the whole run; a port it cannot listen on is a
// usage error, before any rank starts.
std::unique_ptr<comm::StoreServer> serve_store(const Options& o, const std::string& token) {
  comm::StoreOptions store_options;
  store_options.token = token;
  try {
    return std::make_unique<comm::StoreServer>(o.master_addr, o.master_port, store_options);
  } catch (const Error& error) {
    throw Error(detail::concat(
        "tandem-launch serves the job's rendezvous store on --master-addr:--master-port: ",
        error.what(), "; give a free --master-port", o.nnodes == 1 ? " (0: any free port)" : "",
        ", and on several nodes the address of node 0 as --master-addr"));
  }
}

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000 + 0.5));
}

// Every rank ended by exiting 0 or 4: nothing failed, whatever stopped the job.
bool all_exited_cleanly(const AttemptResult& result) {
  for (const RankExit& e : result.exits)
    if (e.signal != 0 || (e.exit_code != 0 && e.exit_code != comm::kStoppedExitCode)) return false;
  return true;
}

// What this node's ranks did in an attempt of a job of several nodes, its record written to the
// log directory when it did not simply finish.
NodeOutcome node_outcome(const AttemptResult& result, const Job& job, const Options& options,
                         int attempt) {
  NodeOutcome o;
  if (result.first_failure) {
    const RankExit& f = *result.first_failure;
    o.code = f.signal || f.frozen ? comm::kCommFaultExitCode : f.exit_code;
    o.retryable = retryable(f);
    o.what = detail::concat("rank ", f.rank, " on ", job.host, ": ", f.describe());
  } else if (!result.failed_elsewhere.empty()) {
    o.code = comm::kCommFaultExitCode;
    o.retryable = true;
    o.what = "this node's ranks were ended after " + result.failed_elsewhere;
  } else if (result.stop_signal) {
    o.code = all_exited_cleanly(result) && result.stopped_on_request ? comm::kStoppedExitCode
                                                                     : 128 + result.stop_signal;
    o.what = "stopped by " + signal_name(result.stop_signal);
  } else if (result.stopped_on_request) {
    o.code = comm::kStoppedExitCode;
    o.what = "stopped on request (exit 4)";
  }
  if (o.code != 0 && !options.log_dir.empty()) {
    nlohmann::json exits = nlohmann::json::array();
    for (const RankExit& e : result.exits)
      exits.push_back({{"rank", e.rank}, {"exit", e.describe()}, {"seconds", e.seconds}});
    write_output_file("--log-dir",
                      options.log_dir + "/attempt-" + std::to_string(attempt) + ".json",
                      nlohmann::json{{"attempt", attempt},
                                     {"run_id", job.run_id},
                                     {"host", job.host},
                                     {"node_rank", options.node_rank},
                                     {"cause", o.what},
                                     {"exit_code", o.code},
                                     {"failed_elsewhere", result.failed_elsewhere},
                                     {"detect_seconds", result.detect_seconds},
                                     {"stop_seconds", result.stop_seconds},
                                     {"ranks", exits}}
                              .dump(2) +
                          "\n");
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  Job job;
  const std::string host = host_name();
  job.host = host;
  std::unique_ptr<comm::StoreServer> store;  // node 0 only: one store for every attempt
  try {
    options = parse(argc, argv);
    if (!options.log_dir.empty()) {
      std::error_code error;
      std::filesystem::create_directories(options.log_dir, error);
      TANDEM_USER_CHECK(!error, "--log-dir '", options.log_dir,
                        "': cannot create it: ", error.message());
      check_output_path("--log-dir", options.log_dir + "/attempt-0.json");
      for (const RankSpec& spec : specs(options, job, 0)) {
        check_output_path("--log-dir", spec.log_path);
        check_output_path("--log-dir", spec.stack_path);
      }
    }
    job.token = store_token(options);
    if (options.node_rank == 0) {
      store = serve_store(options, job.token);
      options.master_port = store->port();  // --master-port 0: the one picked
    }
    job.run_id = run_id(options);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "tandem-launch: error: %s\n", error.what());
    return comm::kUsageExitCode;
  }
  if (store)
    std::fprintf(stderr, "tandem-launch: serving the rendezvous store on %s:%d for every attempt\n",
                 options.master_addr.c_str(), options.master_port);
  if (job.token.empty())
    std::fprintf(stderr,
                 "tandem-launch: note: TANDEM_STORE_TOKEN is not set, so the store on %s:%d "
                 "answers any client; set the same secret on every node to refuse others\n",
                 options.master_addr.c_str(), options.master_port);
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  // SIGHUP (a closed terminal or ssh session) and SIGQUIT stop the job the same way; a closed
  // stdout reader must not kill the launcher (SIGPIPE): the write fails instead.
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::sigaction(s, &action, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  AttemptOptions attempt_options;
  attempt_options.stop_grace = to_ms(options.grace_period_s);
  attempt_options.failure_grace = to_ms(options.failure_grace_s);
  attempt_options.heartbeat_interval = to_ms(options.heartbeat_interval_s);
  attempt_options.heartbeat_timeout = to_ms(options.heartbeat_timeout_s);
  attempt_options.host = host;
  try {
    // The node's metrics endpoint, bound when the first rank asks for it (its configuration
    // says where) and kept across attempts, so that it answers while the ranks restart.
    NodeMetricsOptions metrics_options;
    metrics_options.targets = {options.node_rank,   options.nnodes, host,      options.master_addr,
                               options.master_port, job.token,      job.run_id};
    NodeMetrics node_metrics(metrics_options);
    attempt_options.metrics_channel = [&node_metrics](const RankSpec& spec) {
      return node_metrics.channel_for(spec.rank, spec.local_rank);
    };
    // Several nodes: their launchers agree on every attempt through node 0's store.
    std::unique_ptr<NodeRendezvous> nodes;
    if (options.nnodes > 1)
      nodes = std::make_unique<NodeRendezvous>(NodeRendezvousOptions{
          options.master_addr, options.master_port, job.token, job.run_id, options.node_rank,
          options.nnodes, options.max_restarts, to_ms(options.rendezvous_timeout_s)});
    for (int attempt = nodes ? nodes->first_attempt() : 0;; ++attempt) {
      if (nodes) {
        nodes->start(attempt);
        attempt_options.failed_elsewhere = [&nodes, attempt] { return nodes->failure(attempt); };
      }
      std::fprintf(stderr,
                   "tandem-launch: attempt %d of at most %d: %d local ranks of %d (run %s)\n",
                   attempt, options.max_restarts + 1, options.nproc_per_node,
                   options.nnodes * options.nproc_per_node, job.run_id.c_str());
      const AttemptResult result =
          run_attempt(specs(options, job, attempt), attempt_options, g_stop);
      if (nodes) {
        const NextStep next = nodes->finish(attempt, node_outcome(result, job, options, attempt));
        if (!next.restart) {
          std::fprintf(stderr, "tandem-launch: the job (every node) ends: %s (exit %d)\n",
                       next.why.c_str(), next.code);
          return next.code;
        }
        const double backoff_s = std::min(5.0, 0.1 * (1 << std::min(next.attempt, 6)));
        std::fprintf(stderr, "tandem-launch: %s; every node restarts (attempt %d) in %.1f s\n",
                     next.why.c_str(), next.attempt, backoff_s);
        node_metrics.note_restart(next.attempt, next.why);
        std::this_thread::sleep_for(std::chrono::duration<double>(backoff_s));
        if (g_stop.count > 0) return 128 + g_stop.signal;
        attempt = next.attempt - 1;
        continue;
      }
      const bool stopped_cleanly = all_exited_cleanly(result) && result.stopped_on_request;
      if (!result.first_failure && !result.stop_signal) {
        if (!result.stopped_on_request) return comm::kSuccessExitCode;
        std::fprintf(stderr,
                     "tandem-launch: every rank stopped on request at a step boundary (exit 4); "
                     "run the same command again to resume (exit 4)\n");
        return comm::kStoppedExitCode;
      }
      nlohmann::json record = {{"attempt", attempt}, {"run_id", job.run_id}, {"host", host}};
      int code = comm::kOtherErrorExitCode;
      std::string verdict;
      if (result.first_failure) {
        const RankExit& failed = *result.first_failure;
        record["cause"] = failed.describe();
        record["failed_rank"] = failed.rank;
        record["exit_code"] = failed.exit_code;
        record["signal"] = failed.signal ? signal_name(failed.signal) : "";
        record["frozen"] = failed.frozen;
        code = failed.signal || failed.frozen ? comm::kCommFaultExitCode : failed.exit_code;
        if (!retryable(failed))
          verdict = failed.exit_code == comm::kUsageExitCode
                        ? "a configuration or usage error; restarting would fail the same way"
                        : detail::concat("an error a restart would repeat (exit ", failed.exit_code,
                                         "); not restarting");
        else if (result.stopped_on_request)
          verdict = "a rank had stopped on request (exit 4) in this attempt; not restarting";
        else if (attempt >= options.max_restarts)
          verdict =
              "no restarts left (--max-restarts " + std::to_string(options.max_restarts) + ")";
      }
      if (result.stop_signal) {  // the operator's stop wins over a restart
        record["stopped_by"] = signal_name(result.stop_signal);
        if (!result.first_failure)
          record["cause"] = "stopped by " + signal_name(result.stop_signal);
        // Every rank checkpointed and stopped at a step boundary: the documented code says so.
        code = !result.first_failure && stopped_cleanly ? comm::kStoppedExitCode
                                                        : 128 + result.stop_signal;
        verdict = "stopped by " + signal_name(result.stop_signal) +
                  (code == comm::kStoppedExitCode
                       ? "; every rank stopped at a step boundary (exit 4): run the same command "
                         "again to resume"
                       : "; not restarting");
      }
      record["detect_seconds"] = result.detect_seconds;
      record["stop_seconds"] = result.stop_seconds;
      record["stack_seconds"] = result.stack_seconds;
      nlohmann::json exits = nlohmann::json::array();
      for (const RankExit& e : result.exits)
        exits.push_back({{"rank", e.rank},
                         {"exit", e.describe()},
                         {"stopped_by_launcher", e.stopped_by_launcher},
                         {"seconds", e.seconds}});
      record["ranks"] = exits;
      // Ranks whose stack was recorded: frozen past the heartbeat timeout, or with a stale
      // heartbeat when the attempt was stopped (a stopped rank its peers' timeout caught first).
      nlohmann::json hung = nlohmann::json::array();
      for (const HungRank& h : result.hung)
        hung.push_back({{"rank", h.rank},
                        {"host", host},
                        {"pid", h.pid},
                        {"frozen", h.frozen},
                        {"seconds_since_heartbeat", h.silent_seconds},
                        {"stack_file", h.stack_path},
                        {"recorded_by", h.recorded_by}});
      record["frozen_ranks"] = hung;
      record["restarting"] = verdict.empty();
      if (!options.log_dir.empty())
        write_output_file("--log-dir",
                          options.log_dir + "/attempt-" + std::to_string(attempt) + ".json",
                          record.dump(2) + "\n");
      for (const HungRank& h : result.hung)
        std::fprintf(
            stderr, "tandem-launch: rank %d on %s %s (%.1f s since its heartbeat): %s in %s\n",
            h.rank, host.c_str(), h.frozen ? "froze" : "had a stale heartbeat", h.silent_seconds,
            h.recorded_by.starts_with("not recorded") ? "stack not recorded" : "stack recorded",
            h.recorded_by.starts_with("not recorded") ? h.recorded_by.c_str()
                                                      : h.stack_path.c_str());
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
      node_metrics.note_restart(attempt + 1, what);
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
