// The targets file of a tandem-launch job: node 0 writes it, the other nodes publish to it.
#include "launcher/node_targets.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "runtime/core/errors.h"
#include "runtime/core/output_file.h"

namespace tandem::launcher {

namespace {

constexpr auto kRound = std::chrono::seconds(1);

std::string key_of(int node) {
  return "metrics/" + std::to_string(node);
}

}  // namespace

NodeTargets::NodeTargets(NodeTargetsOptions options, std::string endpoint, std::string sd_file,
                         std::string job)
    : options_(std::move(options)),
      endpoint_(std::move(endpoint)),
      sd_file_(std::move(sd_file)),
      job_(std::move(job)),
      known_(static_cast<size_t>(options_.nnodes)) {
  known_[static_cast<size_t>(options_.node_rank)] = {endpoint_, options_.host};
  if (options_.node_rank == 0 && !sd_file_.empty()) {
    std::lock_guard lock(mutex_);
    write_file();
  }
  if (options_.nnodes > 1) thread_ = std::thread([this] { run(); });
}

NodeTargets::~NodeTargets() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stop_.notify_one();
  if (thread_.joinable()) thread_.join();
}

std::string NodeTargets::job_endpoint() const {
  std::lock_guard lock(mutex_);
  return known_[0].endpoint;
}

void NodeTargets::write_file() {
  const std::string content = monitoring::node_targets_file_json(known_, job_);
  if (content == written_) return;
  try {
    write_output_file("monitoring.sd_file", sd_file_, content);
    written_ = content;
    size_t listed = 0;
    for (const auto& t : known_) listed += !t.endpoint.empty();
    std::fprintf(stderr,
                 "tandem-launch: Prometheus targets file (%zu of %d node endpoints, job \"%s\") "
                 "written to %s\n",
                 listed, options_.nnodes, job_.c_str(), sd_file_.c_str());
  } catch (const Error& error) {
    // The job goes on; the next change tries again.
    std::fprintf(stderr, "tandem-launch: warning: %s\n", error.what());
  }
}

void NodeTargets::exchange(comm::StoreClient& store) {
  const std::string mine = nlohmann::json{{"endpoint", endpoint_}, {"node", options_.host}}.dump();
  if (store.get(key_of(options_.node_rank), 0) != mine) store.set(key_of(options_.node_rank), mine);
  // Node 0 needs every node's; the others only node 0's (for their /status note).
  const int last = options_.node_rank == 0 ? options_.nnodes - 1 : 0;
  std::vector<monitoring::NodeTarget> seen(known_.size());
  for (int node = 0; node <= last; ++node) {
    if (node == options_.node_rank) continue;
    const std::optional<std::string> value = store.get(key_of(node), 0);
    if (!value) continue;
    const nlohmann::json j = nlohmann::json::parse(*value, nullptr, false);
    if (j.is_object() && j.contains("endpoint") && j.contains("node"))
      seen[static_cast<size_t>(node)] = {j["endpoint"].get<std::string>(),
                                         j["node"].get<std::string>()};
  }
  std::lock_guard lock(mutex_);
  for (int node = 0; node <= last; ++node)
    if (node != options_.node_rank && !seen[static_cast<size_t>(node)].endpoint.empty())
      known_[static_cast<size_t>(node)] = seen[static_cast<size_t>(node)];
  if (options_.node_rank == 0 && !sd_file_.empty()) write_file();
}

void NodeTargets::run() {
  std::unique_ptr<comm::StoreClient> store;
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    try {
      if (!store) {
        comm::StoreClientOptions o;
        o.connect_timeout_ms = 1000;
        o.request_timeout_ms = 2000;
        o.token = options_.token;
        o.key_prefix = "tandem/" + options_.run_id + "/launchers/";
        o.host_description = "tandem-launch of node 0";
        store = std::make_unique<comm::StoreClient>(options_.master_addr, options_.master_port, o);
      }
      exchange(*store);
    } catch (const std::exception&) {
      // Node 0's store is gone or not up yet (the node rendezvous says so); the next round
      // connects again.
      store.reset();
    }
    lock.lock();
    stop_.wait_for(lock, kRound, [this] { return stopping_; });
  }
}

}  // namespace tandem::launcher
