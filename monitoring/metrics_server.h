// Serves one rank's metrics at http://BIND:PORT/metrics in the Prometheus text format
// (prometheus-cpp's Exposer, whose civetweb threads only read the registry and never call into
// MPI). The port is bound when the server is made, so that a taken port stops the job at
// startup; /metrics answers 404 until serve() hands it the rank's metrics, once every family
// has its series.
#pragma once

#include <netinet/in.h>

#include <memory>
#include <string>

#include "monitoring/metrics.h"

namespace prometheus {
class Exposer;
}

namespace tandem::monitoring {

class MetricsServer {
 public:
  // Listens on bind:port (an IPv4 address). Throws a UsageError naming monitoring.metrics_port,
  // the address and the reason (taken, not an address of this machine, a privileged port) when
  // it cannot.
  MetricsServer(const std::string& bind, int port);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // From now on /metrics answers with `metrics`, which must outlive this server or be destroyed
  // after it stops answering (the server holds only a weak reference).
  void serve(const RankMetrics& metrics);
  // "HOST:PORT" as Prometheus reaches it: the bound address, or this machine's host name when
  // bound to every interface (0.0.0.0).
  const std::string& endpoint() const { return endpoint_; }

 private:
  std::unique_ptr<prometheus::Exposer> exposer_;
  bool serving_ = false;
  std::string endpoint_;
  sockaddr_in wake_address_{};  // where the destructor connects to stop civetweb at once
};

// This machine's host name (gethostname), the `node` label.
std::string host_name();

}  // namespace tandem::monitoring
