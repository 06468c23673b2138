// One attempt of a job's local ranks: each started in its own process group with the
// torchrun-convention environment, dying with the launcher (PR_SET_PDEATHSIG), its output read
// line by line and printed with its rank in front (and appended to a per-rank log), its heartbeat
// read from a socket of its own (TANDEM_HEARTBEAT_FD), its metrics asked for over another
// (TANDEM_METRICS_FD, when the launcher serves a node endpoint). A rank that stops beating for the
// heartbeat timeout is frozen: its stack is recorded and the attempt fails. When a rank fails the
// others are ended without a checkpoint — the stacks of those whose heartbeat is stale recorded
// first, then SIGINT, then SIGKILL after a short grace — because SIGTERM would ask them for a
// checkpoint they cannot finish without the failed rank. The operator's SIGTERM or SIGINT is
// forwarded as it came, then SIGKILL after the grace period. The attempt ends only when every
// process of it is gone.
#pragma once

#include <functional>

#include <sys/types.h>

#include <csignal>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "runtime/core/owned_fd.h"

namespace tandem::launcher {

struct RankSpec {
  int rank = 0;        // global
  int local_rank = 0;  // on this node
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;  // set on top of the launcher's own environment
  std::string log_path;                    // "" = no per-rank log
  std::string stack_path;                  // where its stack goes if it hangs
};

// How one rank's process ended.
struct RankExit {
  int rank = 0;
  int exit_code = -1;                // when it exited
  int signal = 0;                    // when a signal ended it
  bool stopped_by_launcher = false;  // ended because another rank failed, or the job was stopped
  // The failure is not an exit: the rank stopped beating for silent_seconds, past the timeout.
  bool frozen = false;
  double silent_seconds = 0;
  double seconds = 0;            // from the attempt's start
  std::string describe() const;  // "exit 3", "killed by SIGKILL", "frozen: no heartbeat for 2.1 s"
};

// A rank whose stack was recorded before it was ended.
struct HungRank {
  int rank = 0;
  pid_t pid = -1;
  bool frozen = false;        // silent past the heartbeat timeout; else only stale at a stop
  double silent_seconds = 0;  // since its last heartbeat
  std::string stack_path;
  std::string recorded_by;  // "gdb", "/proc only: ...", see record_stacks
};

struct AttemptResult {
  std::vector<RankExit> exits;  // by rank, in the order they ended
  // The first rank that failed: it ended other than with exit 0 or 4 (stopped on request), or it
  // froze.
  std::optional<RankExit> first_failure;
  std::vector<HungRank> hung;       // stacks recorded, in the order they were taken
  bool stopped_on_request = false;  // some rank exited 4 (kStoppedExitCode)
  double detect_seconds = 0;        // first failure, from the start
  double stop_seconds = 0;          // from the decision to stop until every process was gone
  double stack_seconds = 0;         // of that, recording the stacks of hung ranks
  int stop_signal = 0;  // the signal that stopped the job from outside (SIGINT/SIGTERM), or 0
  std::string failed_elsewhere;  // another node's failure that ended this node's ranks
};

struct AttemptOptions {
  // After the operator's stop (the signal forwarded as received), SIGKILL follows after this.
  std::chrono::milliseconds stop_grace{10000};
  // After a failure the survivors get SIGINT, and SIGKILL after this.
  std::chrono::milliseconds failure_grace{2000};
  // Heartbeats: each rank gets a socket, TANDEM_HEARTBEAT_FD, and these two in the environment
  // (TANDEM_HEARTBEAT_INTERVAL_MS, TANDEM_HEARTBEAT_TIMEOUT_MS). A timeout of 0 gives no socket
  // and judges nothing. A rank is judged from its first beat on, so a program that never beats
  // (a script, another trainer) is never called frozen; a heartbeat older than 3 intervals is
  // stale.
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_timeout{0};
  std::chrono::milliseconds stack_time_limit{20000};  // for gdb, all stacks of one stop at once
  std::string host;                                   // for the stack files' headings
  // A job of several nodes: asked every 200 ms whether another node's attempt failed (its reason,
  // or ""); this node's ranks are then ended as after a failure of their own.
  std::function<std::string()> failed_elsewhere;
  // The node's metrics endpoint (node_metrics.h): asked for each rank's socket as it starts,
  // passed to it as TANDEM_METRICS_FD like the heartbeat's. Unset: no metrics socket.
  std::function<OwnedFd(const RankSpec&)> metrics_channel;
};

// What the launcher's signal handler sets (a handler can only write such flags): the last stop
// signal received and how many.
struct StopRequest {
  volatile sig_atomic_t signal = 0;
  volatile sig_atomic_t count = 0;
};

// Runs the ranks until all have exited. A second stop request kills them at once.
AttemptResult run_attempt(const std::vector<RankSpec>& ranks, const AttemptOptions& options,
                          const StopRequest& stop);

std::string signal_name(int signal);

}  // namespace tandem::launcher
