// Where Prometheus finds a job run by tandem-launch: one target per node (its launcher's
// endpoint, labelled job and node; no rank, as a node holds many). Node 0's launcher writes
// monitoring.sd_file (the path its ranks' hello carries) whole, and again whenever a node's
// endpoint appears or changes; the other nodes' launchers tell it theirs through node 0's store
// (key tandem/RUN/launchers/metrics/N), launcher to launcher, never through a rank. A node checks
// its key every second and sets it again when it is missing (node 0 was started again, with an
// empty store) or different.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/store.h"
#include "monitoring/targets_file.h"

namespace tandem::launcher {

struct NodeTargetsOptions {
  int node_rank = 0, nnodes = 1;
  std::string host;  // this node's name, its target's node label
  // Node 0's store (tandem-launch serves it there), for a job of several nodes.
  std::string master_addr;
  int master_port = 0;
  std::string token, run_id;
};

class NodeTargets {
 public:
  // `endpoint`: this node's, bound; `sd_file` "" writes no file (and on one node starts nothing).
  // Node 0 writes the file at once with what it knows (a bad path was refused before: the
  // hello's check), then, on several nodes, as the others appear.
  NodeTargets(NodeTargetsOptions options, std::string endpoint, std::string sd_file,
              std::string job);
  ~NodeTargets();
  NodeTargets(const NodeTargets&) = delete;
  NodeTargets& operator=(const NodeTargets&) = delete;

  // Node 0's endpoint, where the job's /status page is ("" while a node other than 0 does not
  // know it yet).
  std::string job_endpoint() const;

 private:
  void run();
  void exchange(comm::StoreClient& store);  // one round: publish ours, read the others'
  void write_file();                        // node 0: mutex_ held

  NodeTargetsOptions options_;
  std::string endpoint_, sd_file_, job_;
  mutable std::mutex mutex_;
  std::condition_variable stop_;
  bool stopping_ = false;
  std::vector<monitoring::NodeTarget> known_;  // by node rank; "" endpoint: not known yet
  std::string written_;                        // the file's content as last written
  std::thread thread_;
};

}  // namespace tandem::launcher
