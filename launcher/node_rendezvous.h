// The launchers of a job of several nodes, agreeing on its attempts through the store node 0's
// launcher serves: which attempt runs, when every node's ranks start it (once every node's
// launcher is there), that it failed (the first node whose ranks fail says so, and the others
// end theirs), and what comes next (node 0 gathers every node's outcome and decides: done,
// stopped on request, a restart, or the end with an error code). A node whose launcher died and
// was started again joins the attempt node 0 is waiting to start; when node 0 itself is gone
// (its store with it) the others wait for it, bounded, and say so, then join whatever attempt
// the new one opens.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "comm/store.h"

namespace tandem::launcher {

struct NodeRendezvousOptions {
  std::string master_addr;
  int master_port = 0;
  std::string token;
  std::string run_id;
  int node_rank = 0;
  int nnodes = 1;
  int max_restarts = 0;
  // How long a node waits for the others (to start an attempt, for node 0's decision, for node
  // 0's store to come back) before it gives up.
  std::chrono::milliseconds rendezvous_timeout{600000};
};

// What one node's ranks did in an attempt.
struct NodeOutcome {
  int code = 0;            // 0 done, 4 stopped on request, else the failure's exit code
  bool retryable = false;  // a restart can help (a lost peer, a killed or frozen rank)
  std::string what;        // for messages: "rank 3 on tb-node1: killed by SIGKILL"
};

// What every node does after an attempt.
struct NextStep {
  bool restart = false;
  int attempt = 0;  // when restarting
  int code = 0;     // when not
  std::string why;
};

class NodeRendezvous {
 public:
  explicit NodeRendezvous(NodeRendezvousOptions options);
  ~NodeRendezvous();
  // The attempt this node joins first: 0 on node 0; elsewhere the one node 0 has open.
  int first_attempt();
  // Blocks until every node's launcher is ready for `attempt`; throws past the timeout, naming
  // the nodes that never came. Where node 0 was started again meanwhile, `attempt` becomes the
  // one the new node 0 opens.
  void start(int& attempt);
  // The failure another node reported for `attempt`, or "" (one store request).
  std::string failure(int attempt);
  // This node's outcome of `attempt`; returns what every node does next (node 0 decides).
  NextStep finish(int attempt, const NodeOutcome& outcome);

 private:
  // Runs a store request; when node 0's store is gone, reconnects (up to the rendezvous timeout)
  // and throws Rejoined: whatever attempt this node was in went with the old store.
  template <class Request>
  auto with_store(Request request);
  void connect(std::chrono::milliseconds timeout);

  NodeRendezvousOptions options_;
  std::unique_ptr<comm::StoreClient> store_;
};

}  // namespace tandem::launcher
