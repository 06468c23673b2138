// One attempt of a job's local ranks: each started in its own process group with the
// torchrun-convention environment, dying with the launcher (PR_SET_PDEATHSIG), its output read
// line by line and printed with its rank in front (and appended to a per-rank log); when one
// fails the others are stopped (SIGTERM, SIGKILL after a grace period), and the attempt ends only
// when every process of it is gone.
#pragma once

#include <sys/types.h>

#include <csignal>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tandem::launcher {

struct RankSpec {
  int rank = 0;        // global
  int local_rank = 0;  // on this node
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;  // set on top of the launcher's own environment
  std::string log_path;                    // "" = no per-rank log
};

// How one rank's process ended.
struct RankExit {
  int rank = 0;
  int exit_code = -1;                // when it exited
  int signal = 0;                    // when a signal ended it
  bool stopped_by_launcher = false;  // ended because another rank failed, or the job was stopped
  double seconds = 0;                // from the attempt's start
  std::string describe() const;      // "exit 3", "killed by SIGKILL"
};

struct AttemptResult {
  std::vector<RankExit> exits;            // by rank, in the order they ended
  std::optional<RankExit> first_failure;  // the first rank that ended other than with exit 0
  double detect_seconds = 0;              // first failure, from the start
  double stop_seconds = 0;                // from the first failure until every process was gone
  int stop_signal = 0;  // the signal that stopped the job from outside (SIGINT/SIGTERM), or 0
};

// What the launcher's signal handler sets (a handler can only write such flags): the last stop
// signal received and how many.
struct StopRequest {
  volatile sig_atomic_t signal = 0;
  volatile sig_atomic_t count = 0;
};

// Runs the ranks until all have exited. When one fails, or a stop is requested, the others get
// SIGTERM and, after `grace`, SIGKILL (at once on a second stop request).
AttemptResult run_attempt(const std::vector<RankSpec>& ranks, std::chrono::milliseconds grace,
                          const StopRequest& stop);

std::string signal_name(int signal);

}  // namespace tandem::launcher
