// The per-rank endpoint: /metrics from the rank's registry, /status from its page, on HttpServer.
#include "monitoring/metrics_server.h"

#include "runtime/core/errors.h"

namespace tandem::monitoring {

MetricsServer::MetricsServer(const std::string& bind, int port) {
  try {
    http_ = std::make_unique<HttpServer>(bind, port);
  } catch (const PortRefused& refused) {
    throw UsageError(detail::concat(
        "monitoring.metrics_port: cannot serve metrics on ", refused.address, ": ", refused.why,
        "; choose another monitoring.metrics_port (each rank uses it plus its LOCAL_RANK), or 0 "
        "to turn metrics off"));
  }
}

void MetricsServer::serve(const RankMetrics& metrics) {
  TANDEM_CHECK(!serving_, "MetricsServer::serve is called once");
  serving_ = true;
  http_->handle("/metrics", [&metrics] {
    return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", metrics.exposition()};
  });
}

void MetricsServer::serve_status(std::function<std::string()> page) {
  http_->handle("/status", [page = std::move(page)] {
    return HttpResponse{200, "text/html; charset=utf-8", page()};
  });
}

}  // namespace tandem::monitoring
