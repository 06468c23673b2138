// Serves one rank's metrics at http://BIND:PORT/metrics in the Prometheus text format, and its
// live page at /status when it has one. The port is bound when the server is made, so that a
// taken port stops the job at startup; /metrics answers 404 until serve() hands it the rank's
// metrics, once every family has its series.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "monitoring/http_server.h"
#include "monitoring/metrics.h"
#include "monitoring/metrics_exposure.h"

namespace tandem::monitoring {

class MetricsServer : public MetricsExposure {
 public:
  // Listens on bind:port (an IPv4 address). Throws a UsageError naming monitoring.metrics_port,
  // the address and the reason (taken, not an address of this machine, a privileged port) when
  // it cannot.
  MetricsServer(const std::string& bind, int port);

  // From now on /metrics answers with `metrics`, which must outlive this server.
  void serve(const RankMetrics& metrics) override;
  // From now on /status answers with the HTML `page` renders (on the server's threads).
  void serve_status(std::function<std::string()> page) override;
  const std::string& endpoint() const override { return http_->endpoint(); }
  bool ranks_write_targets_file() const override { return true; }

 private:
  std::unique_ptr<HttpServer> http_;
  bool serving_ = false;
};

}  // namespace tandem::monitoring
