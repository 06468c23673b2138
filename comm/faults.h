// The communication faults a job can restart from: a collective that passed its deadline, a peer
// that died, a rendezvous store that is gone or frozen. Each is a tandem::Error whose what() is
// the whole report; tools exit with kCommFaultExitCode for every one of them, so a launcher can
// tell "worth a restart" from a configuration error (2) or anything else (1).
#pragma once

#include <string>

#include "runtime/core/errors.h"
#include "runtime/core/runtime_context.h"

namespace tandem::comm {

// Exit codes of tandem's tools, defined once (README, "Exit codes").
inline constexpr int kSuccessExitCode = 0;
inline constexpr int kOtherErrorExitCode = 1;
inline constexpr int kUsageExitCode = 2;      // usage or configuration error: restarting won't help
inline constexpr int kCommFaultExitCode = 3;  // a communication fault: a restart may succeed
// Stopped on request (SIGTERM) at a step boundary, after writing a checkpoint when checkpoint.dir
// is set: run the same command again to resume. Not a failure: a launcher does not restart it.
inline constexpr int kStoppedExitCode = 4;

// "rank 3 on tb-node1" where the job's hosts are known (runtime().hosts), else "rank 3".
inline std::string describe_rank(int world_rank) {
  const auto& hosts = runtime().hosts;
  std::string out = "rank " + std::to_string(world_rank);
  if (world_rank >= 0 && static_cast<size_t>(world_rank) < hosts.size())
    out += " on " + hosts[world_rank];
  return out;
}

class CommFault : public Error {
 public:
  using Error::Error;
};

// A wait passed comm.timeout_s; the report names the op, its sequence number, the group and the
// ranks that never arrived (or never answered).
class CommTimeout : public CommFault {
 public:
  using CommFault::CommFault;
};

// The transport reported that a peer is gone (its process died, its connection was reset).
class PeerLost : public CommFault {
 public:
  using CommFault::CommFault;
};

// The rendezvous store did not answer within its deadline, or its connection was lost; the
// report names the rank (or launcher) that hosts it.
class StoreLost : public CommFault {
 public:
  using CommFault::CommFault;
};

}  // namespace tandem::comm
