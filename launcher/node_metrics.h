// The node endpoint of tandem-launch: one HTTP server per node (monitoring.bind:metrics_port,
// learnt from the first rank's hello) that serves every local rank's metrics, so that a job is
// one scrape target per node instead of one per rank. The launcher hands each rank a socket of
// its own (TANDEM_METRICS_FD); at each GET /metrics it asks every live rank for its exposition,
// waits for all of them together up to a deadline, and merges what came (each family's HELP and
// TYPE once); a rank that does not answer in time (frozen, stopped, restarting) is left out of
// that scrape and shown by tandem_launcher_rank_answered 0, and never holds the scrape up. GET
// /status relays local rank 0's page (node 0's is global rank 0's: the job's); a node whose first
// rank has none says where the job's page is. The server is the launcher's and stays up while
// its ranks restart. Where the node endpoint cannot be had, every rank's hello gets the reason,
// and each stops with it as a usage error (exit 2, which the launcher does not restart).
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "launcher/node_targets.h"
#include "monitoring/http_server.h"
#include "monitoring/metrics_channel.h"
#include "runtime/core/owned_fd.h"

namespace tandem::launcher {

struct NodeMetricsOptions {
  NodeTargetsOptions targets;  // this node's place, and node 0's store for the targets file
  // How long one scrape waits for all of the node's ranks together.
  std::chrono::milliseconds scrape_deadline{2000};
};

class NodeMetrics {
 public:
  explicit NodeMetrics(NodeMetricsOptions options);
  // Stops the HTTP server first (a scrape in progress finishes), then the thread reading ranks.
  ~NodeMetrics();
  NodeMetrics(const NodeMetrics&) = delete;
  NodeMetrics& operator=(const NodeMetrics&) = delete;

  // A socket for global rank `rank`, about to start as `local_rank`, replacing that local rank's
  // from an earlier attempt. Returns the rank's end, close-on-exec like the launcher's own (the
  // child clears it on its copy only), to be passed as TANDEM_METRICS_FD.
  OwnedFd channel_for(int rank, int local_rank);
  // The ranks are being restarted as attempt `attempt` because of `why`: until the new rank 0
  // answers, /status shows the last page with the state "restarting".
  void note_restart(int attempt, std::string why);

 private:
  struct Channel;
  using Clock = std::chrono::steady_clock;
  void run();
  void handle(Channel& channel, const monitoring::Frame& frame);  // mutex_ held
  std::string answer_hello(const monitoring::RelayHello& hello);  // mutex_ held
  // Asks each of `asked` for `kind` and waits until all answered or the deadline: their replies
  // by local rank (nullopt: no answer in time, or nothing to give).
  std::vector<std::optional<std::string>> ask(const std::vector<std::shared_ptr<Channel>>& asked,
                                              monitoring::FrameKind kind);
  monitoring::HttpResponse metrics_page();
  monitoring::HttpResponse status_page();
  void wake();

  NodeMetricsOptions options_;
  OwnedFd wake_;  // an eventfd: a new channel, or the end
  std::mutex mutex_;
  std::condition_variable replied_;
  std::vector<std::shared_ptr<Channel>> channels_;  // by local rank, this attempt's
  struct Pending {
    bool done = false;
    std::optional<std::string> body;
  };
  std::map<uint32_t, Pending> pending_;  // by request number, while a scrape waits for it
  uint32_t next_request_ = 0;
  std::string last_status_page_;  // the last page local rank 0 gave
  int restarting_attempt_ = -1;   // while restarting: the attempt being started
  std::string restarting_why_;
  std::string bind_error_;  // why there is no node endpoint, once tried; sticky
  std::string bind_;
  int port_ = 0;
  std::unique_ptr<monitoring::HttpServer> http_;
  std::unique_ptr<NodeTargets> targets_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tandem::launcher
